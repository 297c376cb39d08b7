"""The asyncio client; ``corral.sdk._sync`` is generated from it by ``corral.sdk._unasync``."""
