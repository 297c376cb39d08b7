"""The agent with the real libvirt driver and directory pool (TCG guest), end to end over HTTP."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.agent.app import start
from corral.agent.settings import AgentSettings
from tests.integration.agent.conftest import FakeServer, image_ref

pytestmark = pytest.mark.libvirt

TOKEN = "l" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Under /var/tmp: QEMU (libvirt-qemu) cannot traverse pytest's 0700 temp dirs."""
    path = Path(tempfile.mkdtemp(prefix="corral-test-agent-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def libvirt_up() -> None:
    libvirt = pytest.importorskip("libvirt")
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable: {exc}")


async def run(c: httpx.AsyncClient, fake: FakeServer, task_id: str, payload: object) -> object:
    body = {
        "task_id": task_id,
        "payload": payload,
        "callback_url": f"/api/v1/agent/tasks/{task_id}",
    }
    status = (await c.post("/v1/tasks", json=body, headers=AUTH)).json()
    if status["state"] == "running":
        await fake.wait(lambda: any(s.task_id == task_id for _, s in fake.callbacks), timeout=60)
        status = next(s for _, s in fake.callbacks if s.task_id == task_id).model_dump(mode="json")
    assert status["state"] == "succeeded", status
    return status["result"]


async def test_vm_lifecycle_survives_agent_restart(
    libvirt_up: None, data_dir: Path, fake_server: FakeServer
) -> None:
    vm_id = f"test-{uuid.uuid4().hex[:8]}"
    spec = {"vm_id": vm_id, "name": vm_id, "cpus": 1, "memory_mb": 64, "disk_gb": 1}
    spec["vnc_password"] = "secret"
    settings = AgentSettings(
        data_dir=data_dir, host="127.0.0.1", port=0, tls=False, heartbeat_interval=0.5
    )
    handle = await start(settings)
    try:
        async with httpx.AsyncClient(base_url=handle.url(), timeout=90) as c:
            attach = {"host_id": "h", "token": TOKEN, "server_url": fake_server.url}
            r = await c.post("/v1/attach", json=attach)
            assert r.json()["facts"]["driver"] == "libvirt"
            disk = {
                "kind": "disk.create",
                "vm_id": vm_id,
                "image": image_ref().model_dump(),
                "size_gb": 1,
            }
            path = (await run(c, fake_server, "t1", disk))["path"]  # type: ignore[index]
            assert Path(path).is_file()
            await run(c, fake_server, "t2", {"kind": "vm.define", "spec": spec})
            result = await run(c, fake_server, "t3", {"kind": "vm.start", "vm_id": vm_id})
            assert result == {"power_state": "running"}
            await fake_server.wait(
                lambda: any(
                    e.vm_id == vm_id and e.power_state == "running"
                    for _, batch in fake_server.events
                    for e in batch.events
                )
            )
        await handle.stop()

        handle = await start(settings)  # a new agent process: the guest kept running
        async with httpx.AsyncClient(base_url=handle.url(), timeout=90) as c:
            vms = (await c.get("/v1/vms", headers=AUTH)).json()
            assert {"vm_id": vm_id, "power_state": "running", "drift": []} in vms
            stop = {"kind": "vm.stop", "vm_id": vm_id, "force": True}
            assert await run(c, fake_server, "t4", stop) == {"power_state": "stopped"}
            await run(c, fake_server, "t5", {"kind": "vm.undefine", "vm_id": vm_id})
            await run(c, fake_server, "t6", {"kind": "disk.delete", "vm_id": vm_id})
            vms = (await c.get("/v1/vms", headers=AUTH)).json()
            assert all(v["vm_id"] != vm_id for v in vms)
            assert not Path(path).exists()
    finally:
        runtime = next(iter(handle.runtimes.values()))
        await runtime.compute.undefine(vm_id)  # cleanup if an assertion failed
        await handle.stop()
