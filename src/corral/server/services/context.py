"""The server's services bundle, built once by the composition root and handed to every use case."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from corral.api.signing import ReplayGuard
from corral.server.agents.client import AgentClient
from corral.server.identity.directory import CallerCache
from corral.server.secretbox import SecretBox
from corral.server.security.ratelimit import RateLimiter
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
    secrets: SecretBox
    """Seals secrets stored in the database with the master key kept outside it."""
    callers: CallerCache = field(default_factory=CallerCache)
    """Loaded callers (memberships, roles); clear it when they change."""
    login_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(2.0, 20))
    expensive_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(100.0, 1000))
    """Per user, for the calls ``deps.expensive`` marks (settings ``expensive_*``)."""
    """Login attempts per client address: 2/s sustained, bursts of 20."""
    replay_guard: ReplayGuard = field(default_factory=ReplayGuard)
    """Nonces of signed (AccessKey) requests seen in the last minutes: a replay is refused."""
    sessions: dict[str, tuple[str, datetime, float]] = field(default_factory=dict)
    """Checked session tokens: token id -> (user id, expires at, re-check after [monotonic]).
    A revoked token must be dropped from it here; other server nodes notice within
    ``auth.SESSION_CACHE_S``."""
