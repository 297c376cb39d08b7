"""``client.volumes``: the requests each call sends and what it returns (a recording server)."""

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
from corral.api.volumes import Volume, VolumeQos, VolumeStatus
from corral.sdk import AsyncClient, Client

URL = "http://corral.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VOLUME = Volume(
    id="v" * 32,
    name="data1",
    created_at=NOW,
    updated_at=NOW,
    status=VolumeStatus.available,
    size_gb=10,
    format="qcow2",
    pool_id="p" * 32,
    instantiated=False,
)


class Recorder:
    """Answers every mutating call with a finished operation and every GET with ``VOLUME`` (or
    a page of it); keeps the requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "GET":
            op = OperationModel(
                id="op1",
                type="volume.x",
                target_type="volume",
                target_id=VOLUME.id,
                status=OperationStatus.succeeded,
                progress=100,
                created_at=NOW,
            )
            return httpx.Response(202, content=op.model_dump_json())
        if request.url.path.endswith("/volumes"):
            page = {"items": [VOLUME.model_dump(mode="json")], "total": 1, "offset": 0, "limit": 1}
            return httpx.Response(200, json=page)
        return httpx.Response(200, content=VOLUME.model_dump_json())

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


def test_create_sends_only_what_is_given(client: Client, rec: Recorder) -> None:
    op = client.volumes.create("data1", size_gb=10, pool="local1")
    assert op.done and op.target_id == VOLUME.id
    assert rec.last() == (
        "POST",
        "/volumes",
        {"name": "data1", "size_gb": 10, "pool": "local1", "shareable": False},
        {},
    )
    client.volumes.create(
        "data2", size_gb=1, pool="p", shareable=True, qos={"read_iops_sec": 5}, vm="web1"
    )
    body = rec.last()[2]
    assert body is not None
    assert (body["shareable"], body["vm"]) == (True, "web1")
    assert VolumeQos.model_validate(body["qos"]) == VolumeQos(read_iops_sec=5)


def test_bad_values_are_refused_before_sending(client: Client, rec: Recorder) -> None:
    calls: list[Callable[[], object]] = [
        lambda: client.volumes.create("d", size_gb=0, pool="p"),
        lambda: client.volumes.create("a b", size_gb=1, pool="p"),
        lambda: client.volumes.update("d", qos={"total_bytes_sec": 1, "read_bytes_sec": 1}),
        lambda: client.volumes.update("d", qos={"total_iops_sec": -1}),
        lambda: client.volumes.resize("d", 0),
        lambda: client.volumes.attach("", "vm"),
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call()
    assert rec.requests == []


def test_actions_and_their_requests(client: Client, rec: Recorder) -> None:
    client.volumes.update("data1", name="data2")
    assert rec.last() == ("PATCH", "/volumes/data1", {"name": "data2"}, {})
    client.volumes.update("data1", qos=VolumeQos(total_iops_sec=100))
    assert rec.last()[2] == {"qos": {"total_iops_sec": 100}}  # the rest: 0, unlimited
    client.volumes.attach("data1", "web 1")
    method, path, body, _ = rec.last()
    assert (method, path, body) == ("POST", "/volumes/data1/attach", {"vm": "web 1"})
    assert rec.requests[-1].url.raw_path == b"/api/v1/volumes/data1/attach"
    client.volumes.detach("data1")
    assert rec.last() == ("POST", "/volumes/data1/detach", None, {})
    client.volumes.detach("data1", vm="web1", timeout=5)
    assert rec.last()[3] == {"vm": "web1", "timeout": "5"}
    client.volumes.resize("data1", 20)
    assert rec.last() == ("POST", "/volumes/data1/resize", {"size_gb": 20}, {})
    client.volumes.delete("data1")
    assert rec.last()[:2] == ("DELETE", "/volumes/data1")
    client.volumes.tag("data1", "env=prod")
    assert rec.last()[:3] == ("POST", "/volumes/data1/tags", {"tags": ["env=prod"]})


def test_reads(client: Client, rec: Recorder) -> None:
    assert client.volumes.get("data1") == VOLUME
    page = client.volumes.list(q="status=available", sort="-size")
    assert page.items == [VOLUME] and rec.last()[3]["q"] == "status=available"
    page = client.volumes.of_vm("web/1", status="in_use", limit=5)
    assert page.items == [VOLUME]
    assert rec.requests[-1].url.raw_path.startswith(b"/api/v1/vms/web%2F1/volumes?")
    assert rec.last()[3] == {"limit": "5", "offset": "0", "status": "in_use"}
    assert [v.id for v in client.volumes.attached_to("web1").iter()] == [VOLUME.id]


async def test_the_async_client(rec: Recorder) -> None:
    async with AsyncClient(URL, "t", transport=httpx.MockTransport(rec)) as c:
        op = await c.volumes.create("data1", size_gb=1, pool="p", vm="web1")
        assert op.target_id == VOLUME.id and rec.last()[2] == {
            "name": "data1",
            "size_gb": 1,
            "pool": "p",
            "shareable": False,
            "vm": "web1",
        }
        await c.volumes.detach("data1", timeout=2.5)
        assert rec.last()[3] == {"timeout": "2.5"}
        assert (await c.volumes.of_vm("web1")).total == 1
        assert await c.volumes.attached_to("web1").count() == 1
