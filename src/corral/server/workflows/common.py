"""Helpers shared by workflows: reaching a host's agent, task ids."""

from __future__ import annotations

from typing import Any

from corral.api.agent import TaskPayload
from corral.api.errors import NotFound
from corral.server.agents import host_tokens
from corral.server.agents.client import AgentEndpoint
from corral.server.db.tables import HostRow
from corral.server.workflows.engine import Ctx


async def endpoint(ctx: Ctx, host_id: str) -> AgentEndpoint:
    """How to reach the host's agent, its token opened (cached for a while in memory:
    ``HostDirectory.endpoints``)."""
    directory = ctx.deps.agents.directory
    cached = directory.endpoint(host_id)
    if isinstance(cached, AgentEndpoint):
        return cached
    async with ctx.deps.sessionmaker() as s:
        host = await s.get(HostRow, host_id)
    if host is None:
        raise NotFound(f"host {host_id} not found", kind="host", ref=host_id)
    ep = host_tokens.endpoint(ctx.deps.secrets, host, cert_pem=host.cert_pem)
    directory.remember_endpoint(host_id, ep)
    return ep


async def agent_task(ctx: Ctx, host_id: str, name: str, payload: TaskPayload) -> dict[str, Any]:
    """Run ``payload`` on the host's agent with the task id ``<op>:<name>`` (retry-safe)."""
    ep = await endpoint(ctx, host_id)
    result: dict[str, Any] = await ctx.deps.agents.run(ep, f"{ctx.op_id}:{name}", payload)
    return result
