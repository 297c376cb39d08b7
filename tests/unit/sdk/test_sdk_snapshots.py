"""``client.snapshots``: the requests each call sends and what it returns (a recording server)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from corral.api.errors import InvalidInput
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.api.snapshots import Snapshot, SnapshotStatus
from corral.sdk import AsyncClient, Client

URL = "http://corral.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SNAPSHOT = Snapshot(
    id="s" * 32,
    name="s1",
    created_at=NOW,
    updated_at=NOW,
    volume_id="v" * 32,
    parent_id=None,
    current=True,
    status=SnapshotStatus.ready,
    size_gb=10,
)


class Recorder:
    """Answers every mutating call with a finished operation and every GET with ``SNAPSHOT`` (or
    a page of it); keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "GET":
            op = OperationModel(
                id="op1",
                type="snapshot.x",
                target_type="snapshot",
                target_id=SNAPSHOT.id,
                status=OperationStatus.succeeded,
                progress=100,
                created_at=NOW,
            )
            return httpx.Response(202, content=op.model_dump_json())
        if request.url.path.endswith("/snapshots"):
            page = {
                "items": [SNAPSHOT.model_dump(mode="json")],
                "total": 1,
                "offset": 0,
                "limit": 1,
            }
            return httpx.Response(200, json=page)
        return httpx.Response(200, content=SNAPSHOT.model_dump_json())

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


def test_create_sends_the_volume_in_the_path(client: Client, rec: Recorder) -> None:
    op = client.snapshots.create("data1", "s1")
    assert op.done and op.target_id == SNAPSHOT.id
    assert rec.last() == (
        "POST",
        "/volumes/data1/snapshots",
        {"name": "s1", "description": "", "quiesce": False},
        {},
    )
    client.snapshots.create("data/1", "s2", description="before upgrade", quiesce=True)
    assert rec.last()[2] == {"name": "s2", "description": "before upgrade", "quiesce": True}
    assert rec.requests[-1].url.raw_path == b"/api/v1/volumes/data%2F1/snapshots"


def test_bad_values_are_refused_before_sending(client: Client, rec: Recorder) -> None:
    calls: list[Callable[[], object]] = [
        lambda: client.snapshots.create("data1", "a b"),
        lambda: client.snapshots.create("data1", ""),
        lambda: client.snapshots.create("", "s1"),
        lambda: client.snapshots.create("data1", "s1", description="x" * 1025),
        lambda: client.snapshots.update("s1", name="-bad"),
        lambda: client.snapshots.revert(""),
        lambda: client.snapshots.tree(""),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()
    assert rec.requests == []


def test_actions_and_their_requests(client: Client, rec: Recorder) -> None:
    client.snapshots.update("s1", name="s2")
    assert rec.last() == ("PATCH", "/snapshots/s1", {"name": "s2"}, {})
    client.snapshots.update("s1", description="")
    assert rec.last() == ("PATCH", "/snapshots/s1", {"description": ""}, {})
    client.snapshots.update(SNAPSHOT.id, name="s3", description="d")
    assert rec.last() == (
        "PATCH",
        f"/snapshots/{SNAPSHOT.id}",
        {"name": "s3", "description": "d"},
        {},
    )
    op = client.snapshots.revert("s 1")
    assert op.done and rec.last() == ("POST", "/snapshots/s 1/revert", None, {})
    assert rec.requests[-1].url.raw_path == b"/api/v1/snapshots/s%201/revert"
    client.snapshots.delete("s1")
    assert rec.last()[:3] == ("DELETE", "/snapshots/s1", None)
    client.snapshots.tag("s1", "keep")
    assert rec.last()[:3] == ("POST", "/snapshots/s1/tags", {"tags": ["keep"]})
    client.snapshots.untag("s1", "keep", "x")
    assert rec.requests[-1].url.params.get_list("tag") == ["keep", "x"]
    assert rec.last()[:2] == ("DELETE", "/snapshots/s1/tags")


def test_reads(client: Client, rec: Recorder) -> None:
    assert client.snapshots.get("s1") == SNAPSHOT
    assert rec.last()[:2] == ("GET", "/snapshots/s1")
    page = client.snapshots.list(q="status=ready,volume.name=data1", sort="-created_at")
    assert page.items == [SNAPSHOT]
    assert rec.last()[:2] == ("GET", "/snapshots")
    assert rec.last()[3] == {
        "limit": "100",
        "offset": "0",
        "q": "status=ready,volume.name=data1",
        "sort": "-created_at",
    }
    assert client.snapshots.count(tag="keep") == 1
    assert rec.last()[3]["count"] == "true"
    page = client.snapshots.tree("data/1", status="ready", limit=5)
    assert page.items == [SNAPSHOT] and page.items[0].current
    assert rec.requests[-1].url.raw_path.startswith(b"/api/v1/volumes/data%2F1/snapshots?")
    assert rec.last()[3] == {"limit": "5", "offset": "0", "status": "ready"}
    assert [s.id for s in client.snapshots.tree_of("data1").iter()] == [SNAPSHOT.id]
    assert rec.last()[:2] == ("GET", "/volumes/data1/snapshots")
    assert client.snapshots.tree_of("data1").select(["name"]) == [
        SNAPSHOT.model_dump(mode="json")
    ]  # the recorder ignores ``fields``
    assert rec.last()[3]["fields"] == "name"


async def test_the_async_client(rec: Recorder) -> None:
    async with AsyncClient(URL, "t", transport=httpx.MockTransport(rec)) as c:
        op = await c.snapshots.create("data1", "s1", quiesce=True)
        assert op.target_id == SNAPSHOT.id
        assert rec.last() == (
            "POST",
            "/volumes/data1/snapshots",
            {"name": "s1", "description": "", "quiesce": True},
            {},
        )
        await c.snapshots.update("s1", description="x")
        assert rec.last() == ("PATCH", "/snapshots/s1", {"description": "x"}, {})
        await c.snapshots.revert("s1")
        assert rec.last()[:2] == ("POST", "/snapshots/s1/revert")
        await c.snapshots.delete("s1")
        assert rec.last()[:2] == ("DELETE", "/snapshots/s1")
        assert (await c.snapshots.tree("data1")).total == 1
        assert rec.last()[:2] == ("GET", "/volumes/data1/snapshots")
        assert await c.snapshots.tree_of("data1").count() == 1
        assert [s.name async for s in c.snapshots.tree_of("data1").iter()] == ["s1"]
        assert (await c.snapshots.get("s1")).current
