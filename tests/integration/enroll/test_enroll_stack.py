"""Enrollment over real TLS: CA-issued agent certificates, SNI per host, impersonation and foreign
CAs refused, host removal revokes, re-adding and restarting work."""

from __future__ import annotations

import asyncio
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from sqlalchemy import select

from corral.api.agent import Heartbeat
from corral.api.errors import AgentUnreachable
from corral.server.agents import host_tokens
from corral.server.agents.client import AgentClient, AgentEndpoint
from corral.server.db.tables import HostRow
from corral.up import Stack
from corral.util.ca import (
    ClusterCA,
    host_context,
    host_server_name,
    issued_host_id,
    new_key_and_csr,
)
from corral.util.tls import leaf_pem, pinned_context
from tests.integration.enroll.conftest import api, free_port, tls_stack
from tests.support.stack import wait_op


async def rows(stack: Stack) -> list[HostRow]:
    async with stack.server.services.sessionmaker() as s:
        return list(await s.scalars(select(HostRow).order_by(HostRow.name)))


def endpoint(stack: Stack, row: HostRow) -> AgentEndpoint:
    return host_tokens.endpoint(stack.server.services.secrets, row, cert_pem=row.cert_pem)


def fresh_client(ca: ClusterCA) -> AgentClient:
    """A server-side agent client without pooled connections (every call does a handshake)."""
    client = AgentClient(callback_base="https://127.0.0.1:1")
    client.ca = ca
    return client


async def peer_cert(url: str, ca_pem: str, host_id: str) -> str:
    host, port = url.split("://")[1].split("/")[0].split(":")
    _, writer = await asyncio.open_connection(
        host, int(port), ssl=host_context(ca_pem, host_id), server_hostname=host
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return ssl.DER_cert_to_PEM_cert(der)


def same_cert(a: str, b: str) -> bool:
    return ssl.PEM_cert_to_DER_cert(a) == ssl.PEM_cert_to_DER_cert(b)


async def test_agents_are_enrolled_and_verified_against_the_cluster_ca(tmp_path: Path) -> None:
    async with tls_stack(tmp_path) as stack:
        ca = stack.server.services.agents.ca
        assert ca is not None
        ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
        hosts = await rows(stack)
        assert [h.status for h in hosts] == ["connected", "connected"]
        for i, row in enumerate(hosts):
            assert row.cert_pem is not None and issued_host_id(row.cert_pem) == row.id
            x509.load_pem_x509_certificate(row.cert_pem.encode()).verify_directly_issued_by(ca_cert)
            # The agent keeps key, certificate and CA, private, and serves them for the host's name.
            runtime = list(stack.agent.runtimes.values())[i]
            ident = runtime.attachment.identity
            assert ident is not None and ident.host_id == row.id
            for path in (ident.key_path, ident.cert_path, ident.ca_path):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert same_cert(await peer_cert(row.url, ca.ca_pem, row.id), row.cert_pem)
            # The agent pinned the server's API certificate at enrollment.
            assert runtime.attachment.current is not None
            server_leaf = leaf_pem(stack.server.settings.cert_path.read_text())
            assert runtime.attachment.current.server_cert_pem == server_leaf
        assert stack.agent.tls is not None
        assert set(stack.agent.tls.names()) == {host_server_name(h.id) for h in hosts}
        # Clients that do not ask for a host's name get the bootstrap certificate (enrollment).
        addr = ("127.0.0.1", stack.agent.port)
        default = await asyncio.to_thread(ssl.get_server_certificate, addr, timeout=5)
        assert stack.agent.cert_pem is not None and same_cert(default, stack.agent.cert_pem)
        # Server -> agent calls (tasks, VM lists) verify the agent against the CA.
        client = fresh_client(ca)
        try:
            assert await client.vms(endpoint(stack, hosts[0])) == []
        finally:
            await client.close()


async def test_another_hosts_certificate_or_another_ca_is_refused(tmp_path: Path) -> None:
    async with tls_stack(tmp_path) as stack:
        ca = stack.server.services.agents.ca
        assert ca is not None and stack.agent.tls is not None
        h0, _ = await rows(stack)
        ident0, ident1 = (rt.attachment.identity for rt in stack.agent.runtimes.values())
        assert ident0 is not None and ident1 is not None
        name0 = host_server_name(h0.id)

        async def call_h0() -> None:
            client = fresh_client(ca)
            try:
                await client.vms(endpoint(stack, h0))
            finally:
                await client.close()

        # The agent answers host 0's name with host 1's (valid, same CA) certificate.
        stack.agent.tls.add(name0, ident1.cert_path, ident1.key_path)
        with pytest.raises(AgentUnreachable, match="Hostname mismatch"):
            await call_h0()
        # ... or with a certificate for host 0 issued by another CA.
        other = ClusterCA.load_or_create(tmp_path / "other-ca")
        key_pem, csr_pem = new_key_and_csr(h0.id)
        (tmp_path / "o.key").write_text(key_pem)
        (tmp_path / "o.crt").write_text(other.issue(csr_pem, host_id=h0.id, address="127.0.0.1"))
        stack.agent.tls.add(name0, tmp_path / "o.crt", tmp_path / "o.key")
        with pytest.raises(AgentUnreachable, match="certificate verify failed"):
            await call_h0()
        # Its own certificate again: accepted.
        stack.agent.tls.add(name0, ident0.cert_path, ident0.key_path)
        await call_h0()


async def test_removal_revokes_the_agent_and_it_can_be_added_again(tmp_path: Path) -> None:
    async with tls_stack(tmp_path) as stack, api(stack) as c:
        svc = stack.server.services
        old, _ = await rows(stack)
        runtime = next(iter(stack.agent.runtimes.values()))
        assert runtime.attachment.current is not None
        assert runtime.attachment.current.host_id == old.id
        r = await c.delete(f"/hosts/{old.id}")
        assert r.status_code in (200, 202), r.text
        assert (await c.get(f"/hosts/{old.id}")).status_code == 404
        # The agent was told: it forgot the attachment and its certificate.
        assert runtime.attachment.current is None and runtime.attachment.identity is None
        assert runtime.link is None
        assert stack.agent.tls is not None
        assert host_server_name(old.id) not in stack.agent.tls.names()
        # Its old credentials no longer work: agent -> server calls are refused ...
        server_leaf = leaf_pem(stack.server.settings.cert_path.read_text())
        beat = Heartbeat(host_id=old.id, seq=99, agent_started_at=datetime.now(UTC), vms=[])
        async with httpx.AsyncClient(
            base_url=f"{stack.server.url}/api/v1/agent",
            verify=pinned_context(server_leaf),
            headers={"Authorization": f"Bearer {host_tokens.open_token(svc.secrets, old)}"},
        ) as agent_side:
            r = await agent_side.post("/heartbeat", content=beat.model_dump_json())
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
            r = await agent_side.post("/events", json={"events": []})
            assert r.status_code == 401
        # ... and the server keeps no way to reach the removed host.
        assert svc.agents.directory.endpoint(old.id) is None

        r = await c.post("/hosts", json={"url": old.url, "cluster": "default", "name": "again"})
        assert r.status_code == 202, r.text
        op = await wait_op(c, r.json())
        assert op["status"] == "succeeded", op
        new = next(h for h in await rows(stack) if h.name == "again")
        assert new.id != old.id and new.status == "connected"
        assert new.cert_pem is not None and issued_host_id(new.cert_pem) == new.id
        ident = runtime.attachment.identity
        assert ident is not None and ident.host_id == new.id
        assert svc.agents.ca is not None
        client = fresh_client(svc.agents.ca)
        try:
            assert await client.vms(endpoint(stack, new)) == []
            # The removed host's certificate is worth nothing for the new host's name.
            stale = AgentEndpoint(
                host_id=old.id,
                url=old.url,
                token=host_tokens.open_token(svc.secrets, new),
                cert_pem=old.cert_pem,
            )
            with pytest.raises(AgentUnreachable):
                await client.vms(stale)
        finally:
            await client.close()
        # Heartbeats of the re-added host arrive (with its new token).
        assert runtime.link is not None and runtime.link.attachment.token == (
            host_tokens.open_token(svc.secrets, new)
        )
        since = datetime.now(UTC)
        for _ in range(100):
            beat_at = (await c.get(f"/hosts/{new.id}")).json()["last_heartbeat_at"]
            if beat_at and datetime.fromisoformat(beat_at) > since:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no heartbeat from the re-added host")


async def test_restart_keeps_the_identities(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    async with tls_stack(tmp_path, ports=ports) as stack:
        before = [(h.id, h.cert_pem) for h in await rows(stack)]
    async with tls_stack(tmp_path, ports=ports) as stack:
        hosts = await rows(stack)
        assert [(h.id, h.cert_pem) for h in hosts] == before
        assert all(h.status == "connected" for h in hosts)
        ca = stack.server.services.agents.ca
        assert ca is not None
        assert await stack.server.services.agents.vms(endpoint(stack, hosts[1])) == []
        assert same_cert(
            await peer_cert(hosts[1].url, ca.ca_pem, hosts[1].id), hosts[1].cert_pem or ""
        )
