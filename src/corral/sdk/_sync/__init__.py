"""The blocking client, generated from ``corral.sdk._async`` by ``corral.sdk._unasync``."""
