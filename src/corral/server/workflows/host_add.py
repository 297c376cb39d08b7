"""host.add: pin the agent's certificate, attach it with a fresh token, record its facts."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.api.agent import AttachRequest
from corral.api.errors import CorralError
from corral.api.hosts import HostStatus
from corral.server.agents.client import AgentEndpoint
from corral.server.db.tables import ClusterRow, HostRow
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow


async def _attach(ctx: Ctx) -> dict[str, Any]:
    from corral.server.services.hosts import recompute_capacity

    host_id = ctx.params["host_id"]
    async with ctx.deps.sessionmaker() as s:
        host = await s.get(HostRow, host_id)
        assert host is not None
    cert = await asyncio.to_thread(ctx.deps.agents.fetch_cert, host.url)
    ep = AgentEndpoint(host_id=host.id, url=host.url, token=host.token, cert_pem=cert)
    server_cert = None
    if ctx.deps.settings.tls and ctx.deps.settings.cert_path.exists():
        server_cert = ctx.deps.settings.cert_path.read_text()
    resp = await ctx.deps.agents.attach(
        ep,
        AttachRequest(
            host_id=host.id,
            token=host.token,
            server_url=ctx.deps.settings.callback_base,
            server_cert_pem=server_cert,
        ),
    )
    async with ctx.deps.sessionmaker.begin() as s:
        host = await s.get(HostRow, host_id)
        assert host is not None
        cluster = await s.get(ClusterRow, host.cluster_id)
        assert cluster is not None
        host.cert_pem = cert
        host.facts = resp.facts.model_dump(mode="json")
        recompute_capacity(host, cluster)
        host.status = HostStatus.connected
    return {"hostname": resp.facts.hostname}


async def _delete_row(ctx: Ctx) -> None:
    async with ctx.deps.sessionmaker.begin() as s:
        host = await s.get(HostRow, ctx.params["host_id"])
        if host is not None and host.status != HostStatus.connected:
            await s.delete(host)


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    await _delete_row(ctx)


HOST_ADD = Workflow(
    "host.add",
    steps=(Step("attach", _attach, NO_UNDO),),
    on_failure=_on_failure,
)
