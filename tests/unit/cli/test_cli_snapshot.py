"""``corral snapshot`` against a scripted server: the requests sent, the tables, the tree with
its current marker, the messages printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import ErrorBody, ErrorResponse
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.api.snapshots import Snapshot, SnapshotStatus
from corral.api.volumes import Volume, VolumeStatus
from corral.cli import config as cli_config
from corral.cli.app import app
from corral.cli.common import CliState
from corral.cli.output import cell

URL = "http://corral.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VOLUME = Volume(
    id="v" * 32,
    name="data1",
    created_at=NOW,
    updated_at=NOW,
    status=VolumeStatus.in_use,
    size_gb=20,
    format="qcow2",
    pool_id="p" * 32,
    instantiated=True,
)


def snap(name: str, minute: int, parent: str | None, **fields: Any) -> Snapshot:
    values: dict[str, Any] = {
        "id": name.ljust(32, "0"),
        "name": name,
        "created_at": NOW + timedelta(minutes=minute),
        "updated_at": NOW,
        "volume_id": VOLUME.id,
        "parent_id": None if parent is None else parent.ljust(32, "0"),
        "current": False,
        "status": SnapshotStatus.ready,
        "size_gb": 10,
    }
    return Snapshot(**(values | fields))


class Server:
    """Volume data1 with the tree s1 -> (s2 -> s4, s3 current); s4 is being deleted; s1 takes
    4 MiB, s3 1.5 KiB, the others are not measured. Volume names only for admins (``admin``);
    every change answers a finished operation."""

    def __init__(self, *, admin: bool = True) -> None:
        self.admin = admin
        self.requests: list[httpx.Request] = []
        self.volume = VOLUME.model_copy(update={"snapshots_bytes": (4 << 20) + 1536})
        self.snapshots = [
            snap("s1", 1, None, used_bytes=4 << 20),
            snap(
                "s3",
                3,
                "s1",
                current=True,
                size_gb=20,
                description="after [upgrade]",
                used_bytes=1536,
            ),
            snap("s2", 2, "s1"),
            snap("s4", 4, "s2", status=SnapshotStatus.deleting),
        ]
        self.known = list(self.snapshots)  # what name lookups find

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api/v1")
        if request.method != "GET":
            op = OperationModel(
                id="op-1",
                type="snapshot.x",
                target_type="snapshot",
                target_id="s9".ljust(32, "0"),
                status=OperationStatus.succeeded,
                progress=100,
                created_at=NOW,
            )
            return httpx.Response(202, content=op.model_dump_json())
        if path == "/volumes":  # name lookups
            if not self.admin:
                body = ErrorBody(code="forbidden", message="no", context={})
                return httpx.Response(403, content=ErrorResponse(error=body).model_dump_json())
            return _page([{"id": VOLUME.id, "name": "data1"}])
        if path in ("/volumes/data1", f"/volumes/{VOLUME.id}"):
            return httpx.Response(200, content=self.volume.model_dump_json())
        if path in ("/snapshots", "/volumes/data1/snapshots", f"/volumes/{VOLUME.id}/snapshots"):
            if request.url.params.get("fields"):  # a lookup of parent names
                return _page([{"id": s.id, "name": s.name} for s in self.known])
            return _page([s.model_dump(mode="json") for s in self.snapshots])
        ref = path.rsplit("/", 1)[-1]
        found = [s for s in self.snapshots if ref in (s.id, s.name)]
        return httpx.Response(200, content=found[0].model_dump_json())

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


def when(minute: int) -> list[str]:
    return cell(NOW + timedelta(minutes=minute)).split()


def test_list_columns_and_names(server: Server) -> None:
    r = run(server, "snapshot", "list", "-q", "size>=5", "--status", "ready", "--sort", "name")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == [*("NAME", "ID", "VOLUME", "STATUS", "CURRENT", "USED", "PARENT", "CREATED")]
    s1, s3 = server.snapshots[0], server.snapshots[1]
    assert table[1] == ["s1", s1.id, "data1", "ready", "no", "4.0", "MiB", "-", *when(1)]
    assert table[2] == ["s3", s3.id, "data1", "ready", "yes", "1.5", "KiB", "s1", *when(3)]
    assert table[4][:6] == ["s4", server.snapshots[3].id, "data1", "deleting", "no", "-"]
    gets = server.sent("GET")
    assert gets[0][:2] == ("GET", "/snapshots")
    assert gets[0][3] == {
        "limit": "100",
        "offset": "0",
        "q": "size>=5",
        "sort": "name",
        "status": "ready",
    }
    assert gets[1][:2] == ("GET", "/volumes") and gets[1][3]["q"] == f"id=in:{VOLUME.id}"
    assert len(gets) == 2  # every parent is on the page: no lookup

    server.admin = False  # volume names not visible: ids shown
    server.requests.clear()
    r = run(server, "snapshot", "list", "--volume", "data1")
    assert r.exit_code == 0, r.output
    assert rows(r.stdout)[1][2] == VOLUME.id
    assert server.sent()[0][:2] == ("GET", "/volumes/data1/snapshots")


def test_list_looks_up_parents_not_on_the_page(server: Server) -> None:
    server.snapshots = server.snapshots[1:2]  # s3 alone: its parent s1 is looked up
    r = run(server, "snapshot", "list")
    assert r.exit_code == 0, r.output
    assert rows(r.stdout)[1][5:8] == ["1.5", "KiB", "s1"]
    lookup = server.sent("GET")[-1]
    assert lookup[:2] == ("GET", "/snapshots") and lookup[3]["q"] == "id=in:" + "s1".ljust(32, "0")


def test_json_list_is_the_page(server: Server) -> None:
    r = run(server, "-o", "json", "snapshot", "list")
    assert r.exit_code == 0, r.output
    page = json.loads(r.stdout)
    assert [s["name"] for s in page["items"]] == ["s1", "s3", "s2", "s4"]
    assert [s["current"] for s in page["items"]] == [False, True, False, False]
    assert len(server.requests) == 1


def test_tree_marks_the_current_node(server: Server) -> None:
    r = run(server, "snapshot", "tree", "data1")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines == [
        "data1  20 GiB  snapshots 4.0 MiB",
        f"└── s1  10 GiB  4.0 MiB used  {' '.join(when(1))}",
        f"    ├── s2  10 GiB  {' '.join(when(2))}",
        f"    │   └── s4  10 GiB  {' '.join(when(4))}  [deleting]",
        f"    └── * s3 (current)  20 GiB  1.5 KiB used  {' '.join(when(3))}  after [upgrade]",
    ]
    assert [r[:2] for r in server.sent()] == [
        ("GET", "/volumes/data1"),
        ("GET", f"/volumes/{VOLUME.id}/snapshots"),
    ]
    assert server.sent()[1][3]["limit"] == "1000"


def test_tree_without_a_current_node_and_empty(server: Server) -> None:
    server.volume = VOLUME  # nothing measured: no total
    server.snapshots = [snap("a", 1, None), snap("b", 2, "gone")]  # b's parent is not listed
    r = run(server, "snapshot", "tree", "data1")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "data1  20 GiB  (its content descends from no snapshot)",
        f"├── a  10 GiB  {' '.join(when(1))}",
        f"└── b  10 GiB  {' '.join(when(2))}",
    ]
    r = run(server, "-o", "json", "snapshot", "tree", "data1")
    assert [s["name"] for s in json.loads(r.stdout)] == ["a", "b"]
    server.snapshots = []
    r = run(server, "snapshot", "tree", "data1")
    assert (r.exit_code, r.stdout) == (0, "Volume data1 has no snapshots.\n")


def test_create(server: Server) -> None:
    r = run(server, "snapshot", "create", "data1", "s9", "-d", "before", "--quiesce")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"Snapshot s9 of volume data1 created ({'s9'.ljust(32, '0')}).\n"
    assert server.sent("POST") == [
        (
            "POST",
            "/volumes/data1/snapshots",
            {"name": "s9", "description": "before", "quiesce": True},
            {},
        )
    ]
    r = run(server, "snapshot", "create", "data1", "s10", "--no-wait")
    assert (r.exit_code, r.stdout) == (0, "op-1\n")
    assert server.sent("POST")[-1][2] == {"name": "s10", "description": "", "quiesce": False}
    r = run(server, "snapshot", "create", "data1", "bad name")
    assert r.exit_code == 2 and "name" in r.output
    assert run(server, "snapshot", "create", "data1").exit_code == 2


def test_update_revert_delete_show(server: Server) -> None:
    r = run(server, "snapshot", "update", "s1", "--name", "base", "-d", "golden")
    assert (r.exit_code, r.stdout) == (0, "Snapshot base updated.\n"), r.output
    assert server.sent("PATCH") == [
        ("PATCH", "/snapshots/s1", {"name": "base", "description": "golden"}, {})
    ]
    server.requests.clear()
    r = run(server, "snapshot", "update", "s1")
    assert r.exit_code == 2 and server.requests == []

    r = run(server, "snapshot", "revert", "s2")
    assert r.exit_code == 0, r.output
    assert r.stdout == "Reverted to snapshot s2: the volume goes on from it.\n"
    assert server.sent("POST")[-1] == ("POST", "/snapshots/s2/revert", None, {})
    r = run(server, "-o", "json", "snapshot", "revert", "s2", "--no-wait")
    assert json.loads(r.stdout)["id"] == "op-1"

    r = run(server, "snapshot", "delete", "s1")
    assert (r.exit_code, r.stdout) == (0, "Snapshot s1 deleted.\n")
    assert server.sent("DELETE")[-1][:2] == ("DELETE", "/snapshots/s1")
    r = run(server, "snapshot", "tag", "s1", "keep")
    assert r.exit_code == 0 and server.sent("POST")[-1][:3] == (
        "POST",
        "/snapshots/s1/tags",
        {"tags": ["keep"]},
    )
    r = run(server, "snapshot", "show", "s3")
    assert r.exit_code == 0, r.output
    shown = dict(line.split(None, 1) for line in r.stdout.splitlines() if " " in line.strip())
    assert shown["current"].strip() == "yes" and shown["size_gb"].strip() == "20 GiB"
    assert shown["used_bytes"].strip() == "1.5 KiB (1536 bytes)"


def test_listed_in_the_help(server: Server) -> None:
    r = run(server, "--help")
    assert "snapshot" in r.stdout
    r = run(server, "snapshot", "--help")
    for command in ("list", "show", "create", "update", "revert", "delete", "tag", "untag", "tree"):
        assert command in r.stdout
