"""The agent's HTTP API in-process: attach and bearer auth, errors, tasks, debug faults."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator

import httpx
import pytest

from corral.agent.http import create_agent_app
from corral.agent.runtime import HostRuntime

TOKEN = "t" * 40
OTHER = "o" * 40


def attach_body(token: str = TOKEN, host_id: str = "host-1") -> dict[str, object]:
    return {"host_id": host_id, "token": token, "server_url": "http://127.0.0.1:9/"}


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def client(runtime: HostRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_agent_app({"": runtime}))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as c:
        yield c


async def test_unclaimed_agent_accepts_first_attach_and_persists_it(
    client: httpx.AsyncClient, runtime: HostRuntime
) -> None:
    assert (await client.get("/v1/health")).json()["attached"] is False
    resp = await client.post("/v1/attach", json=attach_body())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["facts"]["hostname"] == "fakehost"
    assert (body["facts"]["disk_gb_total"], body["facts"]["disk_gb_free"]) == (100.0, 42.3)
    path = runtime.data_dir / "attach.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert runtime.attachment.current is not None
    assert runtime.attachment.current.server_url == "http://127.0.0.1:9"


async def test_claimed_agent_needs_current_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/attach", json=attach_body())).status_code == 200
    stolen = await client.post("/v1/attach", json=attach_body(OTHER, "evil"))
    assert stolen.status_code == 401
    assert stolen.json()["error"]["code"] == "unauthenticated"
    wrong = await client.post("/v1/attach", json=attach_body(OTHER), headers=auth(OTHER))
    assert wrong.status_code == 401
    # An idempotent retry of the same attach is fine without a bearer.
    assert (await client.post("/v1/attach", json=attach_body())).status_code == 200
    # Rotation: the current token as bearer, a new token in the body.
    rotated = await client.post("/v1/attach", json=attach_body(OTHER), headers=auth())
    assert rotated.status_code == 200
    assert (await client.get("/v1/facts", headers=auth())).status_code == 401
    assert (await client.get("/v1/facts", headers=auth(OTHER))).status_code == 200


async def test_every_other_endpoint_needs_the_bearer(client: httpx.AsyncClient) -> None:
    await client.post("/v1/attach", json=attach_body())
    for method, path in [
        ("GET", "/v1/facts"),
        ("GET", "/v1/vms"),
        ("GET", "/v1/tasks/x"),
        ("POST", "/v1/tasks"),
        ("GET", "/v1/debug/faults"),
    ]:
        for headers in ({}, auth("x" * 40), {"Authorization": TOKEN}):
            resp = await client.request(method, path, headers=headers, json={})
            assert resp.status_code == 401, (method, path, headers)
            assert resp.json()["error"]["code"] == "unauthenticated"


async def test_unattached_agent_refuses_tasks(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/vms", headers=auth())
    assert resp.status_code == 401


async def test_tasks_and_errors_over_http(client: httpx.AsyncClient) -> None:
    await client.post("/v1/attach", json=attach_body())
    define = {
        "task_id": "d1",
        "payload": {
            "kind": "vm.define",
            "spec": {
                "vm_id": "vm-1",
                "name": "a",
                "cpus": 1,
                "memory_mb": 64,
                "disk_gb": 1,
                "vnc_password": "x",
            },
        },
    }
    resp = await client.post("/v1/tasks", json=define, headers=auth())
    assert resp.json() == {"task_id": "d1", "state": "succeeded", "result": {}, "error": None}
    start = {"task_id": "s1", "payload": {"kind": "vm.start", "vm_id": "vm-1"}}
    resp = await client.post("/v1/tasks", json=start, headers=auth())
    assert resp.json()["result"] == {"power_state": "running"}
    vms = (await client.get("/v1/vms", headers=auth())).json()
    assert vms == [{"vm_id": "vm-1", "power_state": "running", "drift": []}]
    assert (await client.get("/v1/tasks/s1", headers=auth())).json()["state"] == "succeeded"

    missing = await client.get("/v1/tasks/nope", headers=auth())
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "not_found",
        "message": "unknown task",
        "context": {"task_id": "nope"},
    }
    bad = await client.post("/v1/tasks", json={"task_id": "b", "payload": {}}, headers=auth())
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_input"
    pause_stopped = {"task_id": "p1", "payload": {"kind": "vm.pause", "vm_id": "vm-404"}}
    failed = (await client.post("/v1/tasks", json=pause_stopped, headers=auth())).json()
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "not_found"


async def test_debug_faults_make_tasks_fail(client: httpx.AsyncClient) -> None:
    await client.post("/v1/attach", json=attach_body())
    fault = {"op": "agent.vm.start", "times": 1, "code": "driver_error"}
    resp = await client.post("/v1/debug/faults", json=fault, headers=auth())
    assert resp.json() == {"pending": {"agent.vm.start": 1}}
    start = {"task_id": "s1", "payload": {"kind": "vm.start", "vm_id": "vm-1"}}
    failed = (await client.post("/v1/tasks", json=start, headers=auth())).json()
    assert failed["error"]["code"] == "driver_error"
    await client.post("/v1/debug/faults", json={"op": "x", "times": 3}, headers=auth())
    cleared = await client.delete("/v1/debug/faults", headers=auth())
    assert cleared.json() == {"pending": {}}


async def test_debug_faults_forbidden_without_fault_injection(
    client: httpx.AsyncClient, runtime: HostRuntime
) -> None:
    runtime.fault_injection = False
    await client.post("/v1/attach", json=attach_body())
    resp = await client.post("/v1/debug/faults", json={"op": "vm.start"}, headers=auth())
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"
    assert runtime.faults.pending() == {}
