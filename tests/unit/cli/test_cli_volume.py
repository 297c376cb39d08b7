"""``corral volume`` and ``corral vm volumes`` against a scripted server: the requests sent, the
tables and messages printed, the QoS flags."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from corral.api.errors import ErrorBody, ErrorResponse
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.api.vms import PowerState, Vm, VmStatus
from corral.api.volumes import Volume, VolumeAttachment, VolumeQos, VolumeStatus
from corral.cli import config as cli_config
from corral.cli.app import app
from corral.cli.common import CliState
from corral.cli.volume import BPS_FIELDS, IOPS_FIELDS, qos_limits, rate_option

URL = "http://corral.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VM_ID = "a" * 32
POOL_ID = "b" * 32
WEB1 = Vm(
    id=VM_ID,
    name="web1",
    created_at=NOW,
    updated_at=NOW,
    status=VmStatus.running,
    power_state=PowerState.running,
    cpus=1,
    memory_mb=256,
    disk_gb=1,
    image_id=None,
    host_id=None,
)


def volume(name: str, **fields: Any) -> Volume:
    values: dict[str, Any] = {
        "id": name.ljust(32, "0"),
        "name": name,
        "created_at": NOW,
        "updated_at": NOW,
        "status": VolumeStatus.available,
        "size_gb": 10,
        "format": "qcow2",
        "pool_id": POOL_ID,
        "instantiated": False,
    }
    return Volume(**(values | fields))


class Server:
    """Volumes ``free`` and ``used`` (on VM web1 as vdb, with limits); web1; storage pools only
    for admins (``admin``); every change answers a finished operation."""

    def __init__(self, *, admin: bool = False) -> None:
        self.admin = admin
        self.requests: list[httpx.Request] = []
        self.volumes = {
            "free": volume("free"),
            "used": volume(
                "used",
                status=VolumeStatus.in_use,
                instantiated=True,
                attachments=[VolumeAttachment(vm_id=VM_ID, device="vdb")],
                qos=VolumeQos(read_iops_sec=10, write_iops_sec=20, total_bytes_sec=1000),
            ),
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api/v1")
        if request.method != "GET":
            op = OperationModel(
                id="op-1",
                type="volume.x",
                target_type="volume",
                target_id=self.volumes["used"].id,
                status=OperationStatus.succeeded,
                progress=100,
                created_at=NOW,
            )
            return httpx.Response(202, content=op.model_dump_json())
        if path == "/storage-pools":
            if not self.admin:
                body = ErrorBody(code="forbidden", message="needs storage_pool:list", context={})
                return httpx.Response(403, content=ErrorResponse(error=body).model_dump_json())
            return _page([{"id": POOL_ID, "name": "local1"}])
        if path == "/vms":
            return _page([{"id": VM_ID, "name": "web1"}])
        if path == "/vms/web1":
            return httpx.Response(200, content=WEB1.model_dump_json())
        if path in ("/volumes", "/vms/web1/volumes"):
            return _page([v.model_dump(mode="json") for v in self.volumes.values()])
        ref = path.rsplit("/", 1)[-1]
        by_ref = {v.id: v for v in self.volumes.values()} | self.volumes
        return httpx.Response(200, content=by_ref[ref].model_dump_json())

    def sent(self, method: str | None = None) -> list[tuple[str, str, Any, dict[str, str]]]:
        """(method, path, JSON body, query) of the requests (only ``method`` ones if given)."""
        return [
            (
                r.method,
                r.url.path.removeprefix("/api/v1"),
                json.loads(r.content) if r.content else None,
                dict(r.url.params),
            )
            for r in self.requests
            if method is None or r.method == method
        ]


def _page(items: list[Any]) -> httpx.Response:
    return httpx.Response(
        200, json={"items": items, "total": len(items), "offset": 0, "limit": 100}
    )


@pytest.fixture
def server() -> Server:
    cli_config.save(cli_config.Config(url=URL, token="t", username="admin"))
    return Server()


def run(server: Server, *args: str) -> Result:
    state = CliState(transport=httpx.MockTransport(server))
    return CliRunner().invoke(app, list(args), obj=state)


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip() and "─" not in line]


def test_qos_limits_per_unit() -> None:
    none: dict[str, int | None] = dict.fromkeys(IOPS_FIELDS + BPS_FIELDS)
    assert qos_limits(none) is None
    assert qos_limits(none | {"total_iops_sec": 100}) == VolumeQos(total_iops_sec=100).model_dump()
    current = VolumeQos(read_iops_sec=1, write_iops_sec=2, read_bytes_sec=3).model_dump()
    # IOPS flags replace every IOPS limit, the bytes/s ones are kept
    assert (
        qos_limits(none | {"total_iops_sec": 5}, current)
        == VolumeQos(total_iops_sec=5, read_bytes_sec=3).model_dump()
    )
    assert (
        qos_limits(none | {"write_bytes_sec": 7}, current)
        == VolumeQos(read_iops_sec=1, write_iops_sec=2, write_bytes_sec=7).model_dump()
    )
    assert (
        qos_limits(none | {"read_iops_sec": 0}, current) == VolumeQos(read_bytes_sec=3).model_dump()
    )


def test_rates() -> None:
    assert [rate_option(t) for t in ("0", "1000", "10M", "1.5G", "64KiB")] == [
        0,
        1000,
        10 * 1024**2,
        3 * 1024**3 // 2,
        64 * 1024,
    ]
    with pytest.raises(typer.BadParameter):
        rate_option("fast")


def test_list_shows_names_where_the_caller_may_see_them(server: Server) -> None:
    r = run(server, "volume", "list", "--pool", "local1", "-q", "size>=5", "--status", "in_use")
    assert r.exit_code == 0, r.output
    assert rows(r.stdout) == [
        ["NAME", "ID", "STATUS", "SIZE", "POOL", "ROLE", "VM/DEVICE"],
        ["free", volume("free").id, "available", "10", "GiB", POOL_ID, "data", "-"],
        ["used", volume("used").id, "in_use", "10", "GiB", POOL_ID, "data", "web1/vdb"],
    ]
    gets = server.sent("GET")
    assert gets[0][:2] == ("GET", "/volumes")
    assert gets[0][3]["q"] == "size>=5,pool.name=local1" and gets[0][3]["status"] == "in_use"
    assert gets[1][3]["q"] == f"id=in:{VM_ID}" and gets[1][3]["fields"] == "id,name"
    server.admin = True  # a platform admin sees pool names
    assert rows(run(server, "volume", "list").stdout)[1][5] == "local1"


def test_json_lists_are_the_page(server: Server) -> None:
    r = run(server, "-o", "json", "volume", "list")
    assert r.exit_code == 0, r.output
    assert [v["name"] for v in json.loads(r.stdout)["items"]] == ["free", "used"]
    assert len(server.requests) == 1  # no name lookups


def test_a_vms_volumes(server: Server) -> None:
    for args in (("vm", "volumes", "web1"), ("volume", "list", "--vm", "web1")):
        server.requests.clear()
        r = run(server, *args)
        assert r.exit_code == 0, r.output
        assert rows(r.stdout)[2][-1] == "web1/vdb"
        assert server.sent()[0][:2] == ("GET", "/vms/web1/volumes")


def test_create(server: Server) -> None:
    r = run(server, "volume", "create", "data1", "-s", "1.5G", "-p", "local1", "--shareable",
            "--vm", "web1", "--read-iops", "100", "--bps", "1M")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.stdout == f"Volume data1 created ({volume('used').id}), attached to web1 as vdb.\n"
    method, path, body, _ = server.sent("POST")[0]
    assert (method, path) == ("POST", "/volumes")
    assert body == {
        "name": "data1",
        "size_gb": 2,
        "pool": "local1",
        "shareable": True,
        "vm": "web1",
        "qos": VolumeQos(read_iops_sec=100, total_bytes_sec=1024**2).model_dump(),
    }
    r = run(server, "volume", "create", "data2", "--size", "10", "--pool", "p", "--no-wait")
    assert (r.exit_code, r.stdout) == (0, "op-1\n")
    assert "qos" not in server.sent("POST")[-1][2]
    r = run(server, "volume", "create", "data3", "--pool", "p")
    assert r.exit_code == 2 and "--size" in r.output


def test_update_keeps_the_other_unit(server: Server) -> None:
    r = run(server, "volume", "update", "used", "--write-iops", "50", "--name", "used2")
    assert (r.exit_code, r.stdout) == (0, "Volume used2 updated.\n"), r.output
    assert server.sent("PATCH") == [
        (
            "PATCH",
            "/volumes/used",
            {
                "name": "used2",
                "qos": VolumeQos(write_iops_sec=50, total_bytes_sec=1000).model_dump(),
            },
            {},
        )
    ]
    run(server, "volume", "update", "used", "--unlimited")
    assert server.sent("PATCH")[-1][2] == {"qos": VolumeQos().model_dump()}
    server.requests.clear()
    run(server, "volume", "update", "used", "--name", "x")
    assert server.sent() == [("PATCH", "/volumes/used", {"name": "x"}, {})]  # no read first
    for args in (("--unlimited", "--iops", "5"), ()):
        server.requests.clear()
        r = run(server, "volume", "update", "used", *args)
        assert r.exit_code == 2 and server.requests == []


def test_attach_detach_resize_delete(server: Server) -> None:
    r = run(server, "volume", "attach", "used", "web1")
    assert (r.exit_code, r.stdout) == (0, "Volume used attached to web1 as vdb.\n"), r.output
    assert server.sent("POST")[-1][:3] == ("POST", "/volumes/used/attach", {"vm": "web1"})
    r = run(server, "volume", "detach", "used", "--vm", "web1", "--timeout", "5")
    assert (r.exit_code, r.stdout) == (0, "Volume used detached from web1.\n"), r.output
    assert server.sent("POST")[-1] == (
        "POST",
        "/volumes/used/detach",
        None,
        {"vm": "web1", "timeout": "5.0"},
    )
    assert run(server, "volume", "detach", "used", "--timeout", "601").exit_code == 2
    r = run(server, "volume", "resize", "used", "--size", "20G")
    assert (r.exit_code, r.stdout) == (0, "Volume used resized to 20 GiB.\n"), r.output
    assert server.sent("POST")[-1][:3] == ("POST", "/volumes/used/resize", {"size_gb": 20})
    r = run(server, "volume", "delete", "free")
    assert (r.exit_code, r.stdout) == (0, "Volume free deleted.\n")
    assert server.sent("DELETE")[-1][:2] == ("DELETE", "/volumes/free")
    r = run(server, "volume", "show", "used")
    assert r.exit_code == 0 and "qos.total_bytes_sec" in r.stdout
