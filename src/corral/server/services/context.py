"""The server's services bundle, built once by the composition root and handed to every use case."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from corral.server.agents.client import AgentClient
from corral.server.identity.directory import CallerCache
from corral.server.services.operations import OperationRunner
from corral.server.settings import ServerSettings
from corral.server.workflows.engine import WorkflowEngine


@dataclass
class Services:
    settings: ServerSettings
    db: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    engine: WorkflowEngine
    runner: OperationRunner
    agents: AgentClient
    callers: CallerCache = field(default_factory=CallerCache)
    """Loaded callers (memberships, roles); clear it when they change."""
    sessions: dict[str, tuple[str, datetime, float]] = field(default_factory=dict)
    """Checked session tokens: token id -> (user id, expires at, re-check after [monotonic]).
    A revoked token must be dropped from it here; other server nodes notice within
    ``auth.SESSION_CACHE_S``."""
