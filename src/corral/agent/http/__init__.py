"""The agent's HTTP API (FastAPI): the server-facing protocol of ``corral.api.agent``."""

from corral.agent.http.app import create_agent_app, create_host_app

__all__ = ["create_agent_app", "create_host_app"]
