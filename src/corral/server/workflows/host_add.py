"""host.add: enroll the agent (cluster CA certificate, host token), record its facts.

The agent's bootstrap certificate is trusted on first use, or checked against the operator's
``cert_fingerprint`` (op param, SHA-256) when given. Enrollment: a one-time token, ``enroll`` (the
agent answers with a CSR), the token is consumed, the CSR signed by the cluster CA, and
``enroll/complete`` (certificate, CA, host token). The host row keeps the issued certificate: the
server verifies the agent with it from then on (``AgentClient``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from corral.api.agent import EnrollComplete, EnrollRequest
from corral.api.errors import CorralError, InvalidInput
from corral.api.hosts import HostStatus
from corral.server.agents import host_tokens
from corral.server.db.tables import ClusterRow, HostRow
from corral.server.services.context import Services
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.util.ca import ClusterCA
from corral.util.tls import fingerprint, leaf_pem


def cluster_ca(svc: Services) -> ClusterCA:
    """The cluster CA (``<data dir>/ca``), loaded once per process (created at first use)."""
    agents = svc.agents
    if agents.ca is None:
        agents.ca = ClusterCA.load_or_create(svc.settings.data_dir / "ca")
    return agents.ca


def _normalized(fp: str) -> str:
    return fp.strip().upper().removeprefix("SHA256:").replace(":", "").replace(" ", "")


def _check_fingerprint(cert: str | None, expected: str | None, url: str) -> None:
    if expected is None:
        return
    if cert is None:
        raise InvalidInput("a certificate fingerprint needs an https:// agent URL", url=url)
    actual = fingerprint(cert)
    if _normalized(actual) != _normalized(expected):
        raise InvalidInput(
            "the agent's certificate does not have the expected fingerprint",
            url=url,
            expected=expected,
            actual=actual,
        )


async def _attach(ctx: Ctx) -> dict[str, Any]:
    from corral.server.services.hosts import recompute_capacity

    svc: Services = ctx.deps
    host_id = ctx.params["host_id"]
    async with svc.sessionmaker() as s:
        host = await s.get(HostRow, host_id)
        assert host is not None
    bootstrap = await asyncio.to_thread(svc.agents.fetch_cert, host.url)
    _check_fingerprint(bootstrap, ctx.params.get("cert_fingerprint"), host.url)
    ep = host_tokens.endpoint(svc.secrets, host, cert_pem=bootstrap)
    server_cert = None
    if svc.settings.tls and svc.settings.cert_path.exists():
        server_cert = leaf_pem(svc.settings.cert_path.read_text())
    ca = cluster_ca(svc)
    token = svc.agents.enrollments.issue(host.id)
    challenge = await svc.agents.enroll(
        ep,
        EnrollRequest(
            host_id=host.id,
            enrollment_token=token,
            server_url=svc.settings.callback_base,
            server_cert_pem=server_cert,
        ),
    )
    svc.agents.enrollments.consume(token, host_id=host.id)
    cert = ca.issue(challenge.csr_pem, host_id=host.id, address=urlsplit(host.url).hostname)
    resp = await svc.agents.enroll_complete(
        ep,
        EnrollComplete(
            enrollment_token=token, host_token=ep.token, cert_pem=cert, ca_pem=ca.ca_pem
        ),
    )
    async with svc.sessionmaker.begin() as s:
        host = await s.get(HostRow, host_id)
        assert host is not None
        cluster = await s.get(ClusterRow, host.cluster_id)
        assert cluster is not None
        host.cert_pem = cert
        host.facts = resp.facts.model_dump(mode="json")
        recompute_capacity(host, cluster)
        host.status = HostStatus.connected
    return {"hostname": resp.facts.hostname}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """Delete the row of a host that did not get connected, and (best effort) undo a completed
    enrollment on the agent, so that adding it again works (its token dies with the row)."""
    ep = None
    async with ctx.deps.sessionmaker.begin() as s:
        host = await s.get(HostRow, ctx.params["host_id"])
        if host is not None and host.status != HostStatus.connected:
            with contextlib.suppress(CorralError):  # a token that does not open: just delete
                ep = host_tokens.endpoint(ctx.deps.secrets, host, cert_pem=None)
            await s.delete(host)
    if ep is not None:
        await ctx.deps.agents.detach(ep, timeout=2.0)


HOST_ADD = Workflow(
    "host.add",
    steps=(Step("attach", _attach, NO_UNDO),),
    on_failure=_on_failure,
)
