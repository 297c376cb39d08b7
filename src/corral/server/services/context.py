"""The server's services bundle, built once by the composition root and handed to every use case."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from corral.server.agents.client import AgentClient
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
