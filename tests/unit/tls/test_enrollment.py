"""Enrollment through the agent's HTTP API in-process: CSR, one-time token, install, detach."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.agent import attach as attach_mod
from corral.agent.attach import HostIdentity
from corral.agent.http import create_agent_app
from corral.agent.runtime import HostRuntime
from corral.api.errors import Unauthenticated
from corral.server.agents.client import EnrollmentTokens
from corral.util.ca import ClusterCA
from tests.unit.agent.fakes import FakeCompute, FakeVolumes

HOST = "host-1"
ENROLL = "e" * 43
TOKEN = "t" * 43


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[HostRuntime]:
    rt = HostRuntime(
        name="t",
        data_dir=tmp_path / "agent",
        compute=FakeCompute(),
        volumes=FakeVolumes(tmp_path / "pool"),
    )
    await rt.start()
    yield rt
    await rt.stop()


@pytest.fixture
async def client(runtime: HostRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_agent_app({"": runtime}))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as c:
        yield c


@pytest.fixture
def ca(tmp_path: Path) -> ClusterCA:
    return ClusterCA.load_or_create(tmp_path / "ca")


def begin(token: str = ENROLL, host_id: str = HOST) -> dict[str, Any]:
    return {"host_id": host_id, "enrollment_token": token, "server_url": "http://127.0.0.1:9"}


async def enroll(
    c: httpx.AsyncClient, ca: ClusterCA, *, token: str = ENROLL, host_id: str = HOST
) -> tuple[httpx.Response, dict[str, Any]]:
    r = await c.post("/v1/enroll", json=begin(token, host_id))
    assert r.status_code == 200, r.text
    cert = ca.issue(r.json()["csr_pem"], host_id=host_id)
    done = {"enrollment_token": token, "host_token": TOKEN, "cert_pem": cert, "ca_pem": ca.ca_pem}
    return await c.post("/v1/enroll/complete", json=done), done


async def test_enrollment_installs_identity_and_attaches(
    client: httpx.AsyncClient, runtime: HostRuntime, ca: ClusterCA
) -> None:
    seen: list[tuple[str, HostIdentity | None]] = []
    runtime.attachment.on_identity = lambda h, i: seen.append((h, i))
    r, done = await enroll(client, ca)
    assert r.status_code == 200, r.text
    assert r.json()["facts"]["hostname"] == "fakehost"
    assert runtime.attachment.current is not None and runtime.attachment.current.token == TOKEN
    ident = runtime.attachment.identity
    assert ident is not None and seen == [(HOST, ident)]
    for path in (ident.cert_path, ident.key_path, ident.ca_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ident.cert_path.read_text() == done["cert_pem"]
    assert (await client.get("/v1/facts", headers={"Authorization": f"Bearer {TOKEN}"})).is_success
    # A restart finds the identity again.
    runtime.attachment.load()
    assert runtime.attachment.identity == ident


async def test_the_token_works_once(client: httpx.AsyncClient, ca: ClusterCA) -> None:
    r, done = await enroll(client, ca)
    assert r.status_code == 200
    again = await client.post("/v1/enroll/complete", json=done)
    assert again.status_code == 401
    assert "already used" in again.json()["error"]["message"]
    # A claimed agent does not start an enrollment for someone without its token.
    hijack = await client.post("/v1/enroll", json=begin("x" * 43, "evil"))
    assert hijack.status_code == 401 and "already attached" in hijack.json()["error"]["message"]


async def test_another_token_or_an_expired_one_is_refused(
    client: httpx.AsyncClient, ca: ClusterCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await client.post("/v1/enroll", json=begin())
    cert = ca.issue(r.json()["csr_pem"], host_id=HOST)
    body = {
        "enrollment_token": "w" * 43,
        "host_token": TOKEN,
        "cert_pem": cert,
        "ca_pem": ca.ca_pem,
    }
    wrong = await client.post("/v1/enroll/complete", json=body)
    assert wrong.status_code == 401
    monkeypatch.setattr(attach_mod, "ENROLL_TTL_S", -1.0)
    r = await client.post("/v1/enroll", json=begin())
    cert = ca.issue(r.json()["csr_pem"], host_id=HOST)
    late = await client.post("/v1/enroll/complete", json={**body, "enrollment_token": ENROLL})
    assert late.status_code == 401 and "expired" in late.json()["error"]["message"]


async def test_a_certificate_not_for_the_pending_key_is_refused(
    client: httpx.AsyncClient, runtime: HostRuntime, ca: ClusterCA, tmp_path: Path
) -> None:
    first = (await client.post("/v1/enroll", json=begin())).json()["csr_pem"]
    await client.post("/v1/enroll", json=begin())  # a new enrollment replaces the first one
    stale = ca.issue(first, host_id=HOST)
    body = {"enrollment_token": ENROLL, "host_token": TOKEN, "cert_pem": stale, "ca_pem": ca.ca_pem}
    r = await client.post("/v1/enroll/complete", json=body)
    assert r.status_code == 422 and "key" in r.json()["error"]["message"]
    other = ClusterCA.load_or_create(tmp_path / "other")
    r = await client.post("/v1/enroll/complete", json={**body, "ca_pem": other.ca_pem})
    assert r.status_code == 422
    assert runtime.attachment.current is None and runtime.attachment.identity is None


async def test_detach_forgets_everything_and_allows_a_new_enrollment(
    client: httpx.AsyncClient, runtime: HostRuntime, ca: ClusterCA
) -> None:
    r, _ = await enroll(client, ca)
    ident = runtime.attachment.identity
    assert ident is not None and runtime.link is not None
    assert (await client.post("/v1/detach")).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await client.post("/v1/detach", headers=auth)).json() == {"detached": True}
    assert runtime.attachment.current is None and runtime.attachment.identity is None
    assert runtime.link is None
    assert not ident.cert_path.exists() and not ident.key_path.exists()
    assert not runtime.attachment.path.exists()
    assert (await client.get("/v1/facts", headers=auth)).status_code == 401
    r, _ = await enroll(client, ca, token="n" * 43, host_id="host-2")
    assert r.status_code == 200
    assert runtime.attachment.identity is not None
    assert runtime.attachment.identity.host_id == "host-2"


async def test_plain_attach_for_another_host_drops_the_identity(
    client: httpx.AsyncClient, runtime: HostRuntime, ca: ClusterCA
) -> None:
    await enroll(client, ca)
    body = {"host_id": "other", "token": "z" * 40, "server_url": "http://127.0.0.1:9"}
    r = await client.post("/v1/attach", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert runtime.attachment.identity is None


def test_server_tokens_are_single_use_per_host_and_expire() -> None:
    now = [0.0]
    tokens = EnrollmentTokens(ttl=600, clock=lambda: now[0])
    t = tokens.issue("h1")
    with pytest.raises(Unauthenticated, match="unknown"):
        tokens.consume(t, host_id="h2")
    tokens.consume(t, host_id="h1")
    with pytest.raises(Unauthenticated, match="already used"):
        tokens.consume(t, host_id="h1")
    late = tokens.issue("h1")
    now[0] = 601
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.consume(late, host_id="h1")
    with pytest.raises(Unauthenticated, match="unknown"):
        tokens.consume("never-issued", host_id="h1")
    tokens.issue("h3")  # issuing drops expired tokens
    with pytest.raises(Unauthenticated, match="unknown"):
        tokens.consume(late, host_id="h1")
