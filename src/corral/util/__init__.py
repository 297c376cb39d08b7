"""Small helpers shared by server, agent and SDK (no business logic)."""
