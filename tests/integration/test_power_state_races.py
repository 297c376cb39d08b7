"""A host's report of a VM's power state that is older than an operation's result must not
overwrite it.

``services/hosts.apply_power_state`` ignores a report observed before the VM's last change.
Without that check an event or heartbeat built before an operation finished but processed after it
flips the status back (``running`` -> ``stopped`` right after a create
that started the VM) until the next event or heartbeat, and an action requested in that window is
refused (``cannot pause VM: it is stopped``). The create's own events (``stopped`` when defined,
``running`` when started, batched for ``EVENT_WINDOW_S``) routinely arrive after the create finished.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from corral.api.agent import VmEvent, VmEvents, VmReport
from corral.api.vms import PowerState
from tests.integration.test_vm_sim import make_qcow2
from tests.support.orphans import settled, wait_op
from tests.support.stack import api_client, running_stack, upload_image


async def test_an_event_older_than_the_operation_is_ignored(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        runtime = next(iter(stack.agent.runtimes.values()))
        defined_at = datetime.now(UTC)
        r = await c.post("/vms", json={"name": "v", "image": "tiny", "cpus": 1, "memory_mb": 64})
        vm_id = r.json()["target_id"]
        assert (await wait_op(c, r.json()["id"]))["status"] == "succeeded"
        await settled(lambda: c.get("/vms/v"), lambda r: r.json()["status"] == "running")

        await runtime.heartbeat.stop()  # no heartbeat may correct the status meanwhile
        # the "defined" event of the create, delivered after the create finished
        assert runtime.attachment.current is not None
        late = VmEvents(
            events=[VmEvent(vm_id=vm_id, power_state=PowerState.stopped, at=defined_at)]
        )
        r = await c.post(
            "/agent/events",
            content=late.model_dump_json(),
            headers={
                "Authorization": f"Bearer {runtime.attachment.current.token}",
                "Content-Type": "application/json",
            },
        )
        assert r.status_code == 200, r.text
        vm = (await c.get("/vms/v")).json()
        assert (vm["status"], vm["power_state"]) == ("running", "running")


async def test_a_heartbeat_built_before_the_operation_is_ignored(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        runtime = next(iter(stack.agent.runtimes.values()))
        r = await c.post("/vms", json={"name": "v", "image": "tiny", "cpus": 1, "memory_mb": 64})
        assert (await wait_op(c, r.json()["id"]))["status"] == "succeeded"
        await settled(lambda: c.get("/vms/v"), lambda r: r.json()["status"] == "running")

        # a heartbeat lists the VMs (running), then takes a while to reach the server
        listed, go = asyncio.Event(), asyncio.Event()
        list_vms = runtime.heartbeat._vms

        async def slow_list() -> list[VmReport]:
            vms = await list_vms()
            listed.set()
            await go.wait()
            return vms

        await runtime.heartbeat.stop()  # only this test's heartbeat is sent
        runtime.heartbeat._vms = slow_list
        beat = asyncio.create_task(runtime.heartbeat.beat_once())
        await listed.wait()
        events_sent = runtime.events.sent
        r = await c.post("/vms/v/stop", json={"force": True})
        assert (await wait_op(c, r.json()["id"]))["status"] == "succeeded"
        await settled(lambda: asyncio.sleep(0, runtime.events.sent), lambda n: n > events_sent)
        assert runtime.events.sent > events_sent  # the stop's event arrived before the heartbeat
        go.set()
        assert await beat
        vm = (await c.get("/vms/v")).json()
        assert (vm["status"], vm["power_state"]) == ("stopped", "stopped")
