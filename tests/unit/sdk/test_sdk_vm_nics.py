"""``client.vm_nics`` and ``client.vms.create(nics=...)``: the requests each call sends and what
it returns (a recording server)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from corral.api.errors import CorralError, InvalidInput
from corral.api.nics import AllowedPair, Nic, NicCreate
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.sdk import AsyncClient, Client

URL = "http://corral.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VM_ID = "a" * 32
NIC = Nic(
    id="n" * 32,
    vm_id=VM_ID,
    device=0,
    port_group_id="p" * 32,
    mac="02:00:00:00:00:01",
    model="virtio",
    ips=["10.0.0.5"],
    security_groups=["g" * 32],
    ingress_default="deny",
    egress_default="allow",
    spoof_check=True,
    port="tap0",
)


class Recorder:
    """Answers every mutating call with a finished operation on the VM, ``GET .../nics`` with
    ``[NIC]`` and any other GET with ``NIC``; keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.nics_body: bytes | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "GET":
            op = OperationModel(
                id="op1",
                type="vm.nic.x",
                target_type="vm",
                target_id=VM_ID,
                status=OperationStatus.succeeded,
                progress=100,
                created_at=NOW,
            )
            return httpx.Response(202, content=op.model_dump_json())
        if request.url.path.endswith("/nics"):
            body = self.nics_body or f"[{NIC.model_dump_json()}]".encode()
            return httpx.Response(200, content=body)
        return httpx.Response(200, content=NIC.model_dump_json())

    def last(self) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
        """Method, path under the API, JSON body (None if none) and query of the last request."""
        r = self.requests[-1]
        body = json.loads(r.content) if r.content else None
        return r.method, r.url.path.removeprefix("/api/v1"), body, dict(r.url.params)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def client(rec: Recorder) -> Iterator[Client]:
    with Client(URL, "t", transport=httpx.MockTransport(rec)) as c:
        yield c


DEFAULTS = {
    "ips": [],
    "model": "virtio",
    "security_groups": [],
    "ingress_default": "deny",
    "egress_default": "allow",
    "spoof_check": True,
    "allowed_pairs": [],
}
"""What ``add`` sends besides the port group when nothing else is given (the contract's
defaults; ``subnets``, ``mac`` and the limits are left out: None)."""


def test_reads(client: Client, rec: Recorder) -> None:
    assert client.vm_nics.list("web1") == [NIC]
    assert rec.last() == ("GET", "/vms/web1/nics", None, {})
    assert client.vm_nics.get("web 1", 0) == NIC
    assert rec.requests[-1].url.raw_path == b"/api/v1/vms/web%201/nics/0"
    client.vm_nics.get("web1", "02:00:00:00:00:01")
    assert rec.requests[-1].url.raw_path == b"/api/v1/vms/web1/nics/02%3A00%3A00%3A00%3A00%3A01"
    rec.nics_body = b'[{"id": "x"}]'
    with pytest.raises(CorralError, match="unexpected NICs"):
        client.vm_nics.list("web1")


def test_add_sends_the_nic(client: Client, rec: Recorder) -> None:
    op = client.vm_nics.add("web1", "web-pg")
    assert op.done and op.target_id == VM_ID
    assert rec.last() == ("POST", "/vms/web1/nics", {"port_group": "web-pg", **DEFAULTS}, {})
    client.vm_nics.add(
        "web1",
        "web-pg",
        subnets=[],
        ips=["10.0.0.5", "fd00::5"],
        model="e1000",
        mac="02:AA:00:00:00:01",
        security_groups=["web", "ssh"],
        ingress_default="allow",
        egress_default="deny",
        spoof_check=False,
        allowed_pairs=[{"cidr": "10.0.0.100/32"}, AllowedPair(cidr="10.0.1.0/24", mac=None)],
        inbound_kbps=1000,
        outbound_kbps=2000,
    )
    body = rec.last()[2]
    assert body == {
        "port_group": "web-pg",
        "subnets": [],  # [] (no address) is sent, None is not
        "ips": ["10.0.0.5", "fd00::5"],
        "model": "e1000",
        "mac": "02:aa:00:00:00:01",
        "security_groups": ["web", "ssh"],
        "ingress_default": "allow",
        "egress_default": "deny",
        "spoof_check": False,
        "allowed_pairs": [{"cidr": "10.0.0.100/32"}, {"cidr": "10.0.1.0/24"}],
        "inbound_kbps": 1000,
        "outbound_kbps": 2000,
    }
    client.vm_nics.add("web1", "web-pg", subnets=("s4", "s6"))
    assert rec.last()[2] == {"port_group": "web-pg", "subnets": ["s4", "s6"], **DEFAULTS}


def test_update_sends_only_what_changes(client: Client, rec: Recorder) -> None:
    client.vm_nics.update("web1", 1, security_groups=["db", "web"])
    assert rec.last() == ("PATCH", "/vms/web1/nics/1", {"security_groups": ["db", "web"]}, {})
    client.vm_nics.update("web1", "n1", security_groups=[], allowed_pairs=[])
    assert rec.last()[2] == {"security_groups": [], "allowed_pairs": []}  # cleared
    client.vm_nics.update(
        "web1",
        "n1",
        ingress_default="allow",
        egress_default="deny",
        spoof_check=False,
        allowed_pairs=[{"cidr": "10.0.0.100/32", "mac": "02:00:00:00:00:09"}],
    )
    assert rec.last()[2] == {
        "ingress_default": "allow",
        "egress_default": "deny",
        "spoof_check": False,
        "allowed_pairs": [{"cidr": "10.0.0.100/32", "mac": "02:00:00:00:00:09"}],
    }


def test_remove(client: Client, rec: Recorder) -> None:
    client.vm_nics.remove("web1", 2)
    assert rec.last() == ("DELETE", "/vms/web1/nics/2", None, {})
    client.vm_nics.remove("web1", "n1", timeout=2.5)
    assert rec.last() == ("DELETE", "/vms/web1/nics/n1", None, {"timeout": "2.5"})


def test_bad_values_are_refused_before_sending(client: Client, rec: Recorder) -> None:
    calls: list[Callable[[], object]] = [
        lambda: client.vm_nics.add("web1", "pg", model="ne2k"),
        lambda: client.vm_nics.add("web1", "pg", mac="01:00:00:00:00:01"),  # multicast
        lambda: client.vm_nics.add("web1", "pg", mac="00:11:22:33:44:55"),  # not local
        lambda: client.vm_nics.add("web1", "pg", ips=["10.0.0.300"]),
        lambda: client.vm_nics.add("web1", "pg", ingress_default="maybe"),
        lambda: client.vm_nics.add("web1", "pg", inbound_kbps=1),
        lambda: client.vm_nics.add("web1", "pg", allowed_pairs=[{"cidr": "nope"}]),
        lambda: client.vm_nics.update("web1", 0, egress_default="drop"),
        lambda: client.vm_nics.update("web1", 0, security_groups=["g"] * 17),
        lambda: client.vm_nics.get("", 0),
        lambda: client.vm_nics.remove("web1", ""),
        lambda: client.vms.create(
            "v", image="i", offering="s", nics=[{"port_group": "pg", "model": "x"}]
        ),
        lambda: client.vms.create("v", image="i", offering="s", nics=[{"port_group": "pg"}] * 17),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()
    assert rec.requests == []


def test_vm_create_with_nics(client: Client, rec: Recorder) -> None:
    client.vms.create("v1", image="img", offering="small")
    body = rec.last()[2]
    assert body is not None and "nics" not in body
    client.vms.create(
        "v1",
        image="img",
        offering="small",
        nics=[
            {"port_group": "web-pg", "ips": ["10.0.0.5"], "security_groups": ["web", "ssh"]},
            NicCreate(port_group="db-pg", model="e1000", subnets=[]),
        ],
    )
    body = rec.last()[2]
    assert body is not None
    assert body["nics"] == [
        {"port_group": "web-pg", "ips": ["10.0.0.5"], "security_groups": ["web", "ssh"]},
        {"port_group": "db-pg", "model": "e1000", "subnets": []},
    ]


async def test_the_async_client(rec: Recorder) -> None:
    async with AsyncClient(URL, "t", transport=httpx.MockTransport(rec)) as c:
        assert await c.vm_nics.list("web1") == [NIC]
        assert await c.vm_nics.get("web1", NIC.id) == NIC
        op = await c.vm_nics.add("web1", "pg", security_groups=["web"])
        assert op.target_id == VM_ID
        assert rec.last()[2] == {"port_group": "pg", **DEFAULTS, "security_groups": ["web"]}
        await c.vm_nics.update("web1", 0, spoof_check=True)
        assert rec.last()[:3] == ("PATCH", "/vms/web1/nics/0", {"spoof_check": True})
        await c.vm_nics.remove("web1", 0, timeout=0)
        assert rec.last()[3] == {"timeout": "0"}
        await c.vms.create("v1", image="img", offering="s", nics=[{"port_group": "pg"}])
        assert rec.last()[2] == {
            "name": "v1",
            "image": "img",
            "offering": "s",
            "start": True,
            "nics": [{"port_group": "pg"}],
        }
