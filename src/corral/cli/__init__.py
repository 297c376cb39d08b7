"""The user CLI (``corral login``, ``corral vm create`` ...): Typer commands over the SDK."""
