"""The management server: REST API, workflows, scheduler and the database of desired state."""
