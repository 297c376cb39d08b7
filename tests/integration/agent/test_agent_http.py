"""The agent on a real port (uvicorn) with fake drivers, talking HTTP to a fake server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from corral.agent.app import AgentHandle, start
from corral.agent.runtime import HostRuntime
from corral.agent.settings import AgentSettings
from corral.api.agent import AgentTask, DiskCreate, VmDefine, VmPower
from corral.api.vms import PowerState
from tests.integration.agent.conftest import IMAGE_BYTES, FakeServer, image_ref
from tests.unit.agent.fakes import FakeCompute, FakeVolumes, spec

TOKEN = "s" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def compute() -> FakeCompute:
    return FakeCompute()


@pytest.fixture
async def agent(tmp_path: Path, compute: FakeCompute) -> AsyncIterator[AgentHandle]:
    runtime = HostRuntime(
        name="it",
        data_dir=tmp_path / "agent",
        compute=compute,
        volumes=FakeVolumes(tmp_path / "pool"),
        heartbeat_interval=0.3,
        inline_wait=0.1,
    )
    settings = AgentSettings(data_dir=tmp_path / "agent", host="127.0.0.1", port=0, tls=False)
    handle = await start(settings, runtimes={"": runtime})
    yield handle
    await handle.stop()


def task(task_id: str, payload: object, server: FakeServer) -> dict[str, object]:
    body = AgentTask.model_validate(
        {"task_id": task_id, "payload": payload, "callback_url": f"/api/v1/agent/tasks/{task_id}"}
    )
    return body.model_dump(mode="json")


async def test_attach_heartbeat_tasks_callbacks_events(
    agent: AgentHandle, fake_server: FakeServer, compute: FakeCompute, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=agent.url(0), timeout=10) as c:
        attach = {"host_id": "host-1", "token": TOKEN, "server_url": fake_server.url}
        t0 = loop.time()
        assert (await c.post("/v1/attach", json=attach)).status_code == 200

        # Heartbeats: the first at once and with facts, then every interval without them.
        t1 = await fake_server.wait(lambda: len(fake_server.heartbeats) >= 1, timeout=3)
        first = fake_server.heartbeats[0][1]
        assert t1 - t0 < 1.0
        assert first.host_id == "host-1" and first.facts is not None and first.vms == []
        await fake_server.wait(lambda: len(fake_server.heartbeats) >= 3, timeout=3)
        later = [hb for _, hb in fake_server.heartbeats[1:]]
        assert all(hb.facts is None for hb in later)
        assert [hb.seq for _, hb in fake_server.heartbeats[:3]] == [1, 2, 3]
        assert fake_server.auth == {f"Bearer {TOKEN}"}

        # disk.create downloads the image from the server with the bearer token.
        disk = DiskCreate(vm_id="vm-1", image=image_ref(), size_gb=1)
        r = await c.post("/v1/tasks", json=task("t-disk", disk, fake_server), headers=AUTH)
        status = r.json()
        if status["state"] == "running":
            await fake_server.wait(lambda: len(fake_server.callbacks) >= 1)
            status = fake_server.callbacks[-1][1].model_dump(mode="json")
        assert status["state"] == "succeeded", status
        assert status["result"] == {"path": str(tmp_path / "pool" / "vm-1.qcow2")}
        assert (tmp_path / "pool" / "base-img-1").read_bytes() == IMAGE_BYTES

        # A slow task answers "running", then calls back (retrying a failing server once).
        compute.delay = 0.4
        fake_server.fail_callbacks = 1
        define = VmDefine(spec=spec("vm-1"))
        r = await c.post("/v1/tasks", json=task("t-def", define, fake_server), headers=AUTH)
        assert r.json()["state"] == "running"
        n = len(fake_server.callbacks)
        await fake_server.wait(lambda: len(fake_server.callbacks) > n, timeout=5)
        assert fake_server.callbacks[-1][1].task_id == "t-def"
        assert fake_server.callbacks[-1][1].state == "succeeded"
        assert (await c.get("/v1/tasks/t-def", headers=AUTH)).json()["state"] == "succeeded"

        # The duplicate id returns the first answer without running anything.
        calls = len(compute.calls)
        again = await c.post("/v1/tasks", json=task("t-def", define, fake_server), headers=AUTH)
        assert again.json()["state"] == "succeeded"
        assert len(compute.calls) == calls

        # A power change is pushed to the server promptly as an event.
        compute.delay = 0.0
        n_events = len(fake_server.events)
        t_start = loop.time()
        power = VmPower(kind="vm.start", vm_id="vm-1")
        r = await c.post("/v1/tasks", json=task("t-start", power, fake_server), headers=AUTH)
        assert r.json()["result"] == {"power_state": "running"}
        t_event = await fake_server.wait(lambda: len(fake_server.events) > n_events, timeout=2)
        assert t_event - t_start < 0.5
        event = fake_server.events[-1][1].events[-1]
        assert (event.vm_id, event.power_state) == ("vm-1", PowerState.running)

        # The next heartbeats report the VM.
        n = len(fake_server.heartbeats)
        await fake_server.wait(lambda: len(fake_server.heartbeats) > n, timeout=3)
        vms = fake_server.heartbeats[-1][1].vms
        assert [(v.vm_id, v.power_state, v.drift) for v in vms] == [
            ("vm-1", PowerState.running, [])
        ]


async def test_server_outage_is_survived(
    tmp_path: Path, agent: AgentHandle, fake_server: FakeServer
) -> None:
    async with httpx.AsyncClient(base_url=agent.url(), timeout=10) as c:
        attach = {"host_id": "h", "token": TOKEN, "server_url": "http://127.0.0.1:9"}
        assert (await c.post("/v1/attach", json=attach)).status_code == 200
        await asyncio.sleep(0.7)  # a few failed beats
        attach["server_url"] = fake_server.url
        assert (await c.post("/v1/attach", json=attach, headers=AUTH)).status_code == 200
        await fake_server.wait(lambda: len(fake_server.heartbeats) >= 1, timeout=3)
        first = fake_server.heartbeats[0][1]
        assert first.facts is not None  # facts resent after re-attach
        assert first.seq > 1  # the failed beats counted


async def test_task_cut_by_shutdown_is_reported_failed_after_restart(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    compute = FakeCompute(delay=30)

    def runtime() -> HostRuntime:
        return HostRuntime(
            name="it",
            data_dir=tmp_path / "agent",
            compute=compute,
            volumes=FakeVolumes(tmp_path / "pool"),
            inline_wait=0.05,
            shutdown_grace=0.1,
        )

    settings = AgentSettings(data_dir=tmp_path / "agent", host="127.0.0.1", port=0, tls=False)
    handle = await start(settings, runtimes={"": runtime()})
    async with httpx.AsyncClient(base_url=handle.url(), timeout=10) as c:
        attach = {"host_id": "h", "token": TOKEN, "server_url": fake_server.url}
        assert (await c.post("/v1/attach", json=attach)).status_code == 200
        define = VmDefine(spec=spec("vm-1"))
        r = await c.post("/v1/tasks", json=task("t-cut", define, fake_server), headers=AUTH)
        assert r.json()["state"] == "running"
    await handle.stop()
    assert fake_server.callbacks == []

    compute.delay = 0.0
    handle = await start(settings, runtimes={"": runtime()})
    try:
        await fake_server.wait(lambda: len(fake_server.callbacks) == 1)
        status = fake_server.callbacks[0][1]
        assert status.task_id == "t-cut" and status.state == "failed"
        assert status.error is not None and status.error.code == "agent_error"
        async with httpx.AsyncClient(base_url=handle.url(), timeout=10) as c:
            r = await c.post("/v1/tasks", json=task("t-cut", define, fake_server), headers=AUTH)
            assert r.json()["state"] == "failed"
        assert compute.specs == {}  # never run a second time
    finally:
        await handle.stop()
