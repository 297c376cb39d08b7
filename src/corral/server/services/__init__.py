"""Use cases of the server: no web framework, no SQL strings."""
