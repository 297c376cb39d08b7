"""Client basics: login, error mapping, paging, filters, TLS options."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from corral.api.errors import (
    Conflict,
    CorralError,
    InUse,
    InvalidInput,
    InvalidState,
    NameTaken,
    NotFound,
    Timeout,
    Unauthenticated,
)
from corral.api.vms import VmStatus
from corral.sdk import Client
from corral.sdk.testing import FakeCorral
from corral.util.tls import ensure_self_signed

URL = "http://corral.test"


def test_login_gets_a_token_used_on_every_request(fake: FakeCorral) -> None:
    with Client.login(URL, "admin", "secret", transport=fake.transport) as client:
        assert client.token in fake.state.tokens
        client.zones.list()
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {client.token}"
    assert fake.requests[0].url.path == "/api/v1/auth/login"


def test_login_with_a_bad_password_raises_unauthenticated(fake: FakeCorral) -> None:
    with pytest.raises(Unauthenticated):
        Client.login(URL, "admin", "wrong", transport=fake.transport)


def test_calls_without_a_token_are_refused(fake: FakeCorral) -> None:
    with Client(URL, transport=fake.transport) as client, pytest.raises(Unauthenticated):
        client.vms.list()
    assert client.token is None


def test_health_needs_no_token(fake: FakeCorral) -> None:
    with Client(URL, transport=fake.transport) as client:
        assert client.health().status == "ok"


def test_errors_come_back_as_their_own_classes(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.zones.get("nowhere")
    assert missing.value.context == {"kind": "zone", "ref": "nowhere"}
    client.zones.create("z1").wait()
    with pytest.raises(NameTaken) as taken:
        client.zones.create("z1")
    assert isinstance(taken.value, Conflict)
    client.clusters.create("c1", zone="z1").wait()
    with pytest.raises(InUse):
        client.zones.delete("z1")


def test_bad_input_is_refused_before_anything_is_sent(client: Client, fake: FakeCorral) -> None:
    sent = len(fake.requests)
    with pytest.raises(InvalidInput, match="give cpus and memory_mb, or an offering"):
        client.vms.create("vm1", image="img")
    with pytest.raises(InvalidInput, match="name"):
        client.zones.create("no spaces allowed")
    assert len(fake.requests) == sent


def _answer(status: int, body: bytes, content_type: str = "text/html") -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(status, content=body, headers={"Content-Type": content_type})
    )


def test_error_bodies_not_from_corral_are_mapped_by_status() -> None:
    with (
        Client(URL, "t", transport=_answer(404, b"<h1>Not Found</h1>")) as client,
        pytest.raises(NotFound, match="HTTP 404"),
    ):
        client.vms.get("x")
    with (
        Client(URL, "t", transport=_answer(502, b"bad gateway")) as client,
        pytest.raises(CorralError, match="HTTP 502: bad gateway") as err,
    ):
        client.vms.get("x")
    assert type(err.value) is CorralError


def test_unknown_error_codes_keep_the_remote_code() -> None:
    body = b'{"error": {"code": "frobnicated", "message": "a code this client does not know", "context": {"max": 3}}}'
    transport = _answer(403, body, "application/json")
    with Client(URL, "t", transport=transport) as client, pytest.raises(CorralError) as err:
        client.vms.list()
    assert err.value.remote_code == "frobnicated"  # type: ignore[attr-defined]
    assert err.value.remote_status == 403  # type: ignore[attr-defined]
    assert err.value.context == {"max": 3}


def test_network_failures_become_corral_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with (
        Client(URL, "t", transport=httpx.MockTransport(refuse)) as client,
        pytest.raises(CorralError, match="cannot reach the Corral server"),
    ):
        client.zones.list()
    with Client(URL, "t", transport=httpx.MockTransport(hang)) as client, pytest.raises(Timeout):
        client.zones.list()


def test_iter_walks_every_page(client: Client, fake: FakeCorral) -> None:
    for i in range(7):
        client.zones.create(f"zone-{i}").wait()
    before = len(fake.requests)
    names = [zone.name for zone in client.zones.iter(page_size=3, sort="name")]
    assert names == [f"zone-{i}" for i in range(7)]
    assert len(fake.requests) - before == 3
    page = client.zones.list(limit=2, offset=6, sort="-name")
    assert (page.total, page.limit, page.offset) == (7, 2, 6)
    assert [zone.name for zone in page.items] == ["zone-0"]


def test_list_filters_are_sent_as_query_parameters(seeded: Client, fake: FakeCorral) -> None:
    seeded.vms.create("a", image="img", offering="small").wait()
    seeded.vms.create("b", image="img", offering="small", start=False).wait()
    stopped = seeded.vms.list(status=VmStatus.stopped, host_id=None)
    assert [vm.name for vm in stopped.items] == ["b"]
    assert fake.requests[-1].url.params["status"] == "stopped"
    assert "host_id" not in fake.requests[-1].url.params
    assert [h.name for h in seeded.hosts.iter(enabled=True)] == ["h1"]


def test_get_accepts_an_id_or_a_name(seeded: Client) -> None:
    image = seeded.images.get("img")
    assert seeded.images.get(image.id) == image
    assert image.status == "ready" and image.format == "qcow2"


def test_vm_lifecycle_actions(seeded: Client, fake: FakeCorral) -> None:
    op = seeded.vms.create("vm1", image="img", cpus=2, memory_mb=1024, disk_gb=5).wait()
    vm = seeded.vms.get("vm1")
    assert (vm.id, vm.status, vm.cpus, vm.memory_mb, vm.disk_gb) == (
        op.target_id,
        "running",
        2,
        1024,
        5,
    )
    seeded.vms.pause("vm1").wait()
    assert seeded.vms.get("vm1").status == "paused"
    seeded.vms.resume("vm1").wait()
    seeded.vms.stop("vm1", force=True, timeout=5).wait()
    assert fake.requests[-3].content == b'{"force":true,"timeout":5.0}'
    with pytest.raises(InvalidState):
        seeded.vms.reboot("vm1")
    seeded.vms.resize("vm1", cpus=4).wait()
    assert seeded.vms.get("vm1").cpus == 4
    seeded.vms.start("vm1").wait()
    seeded.vms.delete("vm1").wait()
    with pytest.raises(NotFound):
        seeded.vms.get("vm1")


def test_hosts_and_clusters_can_be_updated(seeded: Client) -> None:
    seeded.hosts.update("h1", enabled=False).wait()
    assert seeded.hosts.get("h1").enabled is False
    seeded.clusters.update("c1", cpu_overcommit=2.0).wait()
    cluster = seeded.clusters.get("c1")
    assert (cluster.cpu_overcommit, cluster.memory_overcommit) == (2.0, 1.0)


def test_verify_accepts_a_pem_file_or_a_context(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    ensure_self_signed(cert, key, "corral-test")
    Client("https://127.0.0.1:1", verify=str(cert)).close()
    Client("https://127.0.0.1:1", verify=ssl.create_default_context()).close()
    with pytest.raises(InvalidInput, match="cannot load CA file"):
        Client("https://127.0.0.1:1", verify=str(tmp_path / "missing.pem"))
