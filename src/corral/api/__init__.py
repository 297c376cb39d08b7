"""The contract: pydantic models of every resource, request, error and the manager-agent protocol."""
