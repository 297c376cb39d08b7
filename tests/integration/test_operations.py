"""Operations: serialized per resource, long-polled, cancellable while queued, listed and filtered."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from corral.agent.compute.simulator import SimulatorDriver
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op


async def test_queued_operation_cancel_and_serialization(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        r = await c.post("/vms", json={"name": "v1", "image": "tiny", "cpus": 1, "memory_mb": 64})
        assert (await wait_op(c, r.json()))["status"] == "succeeded"
        driver = next(iter(stack.agent.runtimes.values())).compute
        assert isinstance(driver, SimulatorDriver)
        driver.latencies = dataclasses.replace(driver.latencies, stop=1.0)

        stop = (await c.post("/vms/v1/stop", json={"force": True})).json()
        start = (await c.post("/vms/v1/start")).json()
        reboot = (await c.post("/vms/v1/reboot")).json()  # accepted: it queues behind the stop
        await asyncio.sleep(0.3)
        assert (await c.get(f"/operations/{stop['id']}")).json()["status"] == "running"
        assert (await c.get(f"/operations/{start['id']}")).json()["status"] == "queued"

        r = await c.post(f"/operations/{start['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = await c.post(f"/operations/{stop['id']}/cancel")
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_cancellable"

        assert (await wait_op(c, stop))["status"] == "succeeded"
        # the reboot ran after the stop (serialized) and failed: the VM is stopped, start was cancelled
        rebooted = await wait_op(c, reboot)
        assert rebooted["status"] == "failed" and rebooted["error"]["code"] == "invalid_state"
        vm = (await c.get("/vms/v1")).json()
        assert vm["status"] == "stopped"
        assert driver.calls["vm.start"] == 1  # the create's; the cancelled start never ran

        ops = (
            await c.get("/operations", params={"target_id": vm["id"], "sort": "-created_at"})
        ).json()
        assert [o["type"] for o in ops["items"]][:3] == ["vm.reboot", "vm.start", "vm.stop"]
        assert (await c.get("/operations", params={"status": "cancelled"})).json()["total"] == 1


async def test_long_poll_returns_early_when_done_and_on_time_otherwise(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        driver = next(iter(stack.agent.runtimes.values())).compute
        assert isinstance(driver, SimulatorDriver)
        driver.latencies = dataclasses.replace(driver.latencies, start=1.5)
        r = await c.post("/vms", json={"name": "v1", "image": "tiny", "cpus": 1, "memory_mb": 64})
        op = r.json()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        first = (await c.get(f"/operations/{op['id']}", params={"wait": 0.3})).json()
        assert first["status"] == "running" and loop.time() - t0 >= 0.3
        assert 0 < first["progress"] < 100
        done = (await c.get(f"/operations/{op['id']}", params={"wait": 30})).json()
        assert done["status"] == "succeeded" and done["progress"] == 100
        assert loop.time() - t0 < 20
