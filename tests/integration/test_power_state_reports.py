"""Power-state reports (agent events and heartbeat states) are applied with one conditional UPDATE
each (``services/hosts._apply_power_states``), on SQLite and PostgreSQL: a VM in a steady status
follows its power state, one under an operation keeps its status, and reports that are stale, from
another host or about unknown VMs change nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from corral.api.agent import VmEvent
from corral.api.vms import PowerState
from corral.server.db.tables import HostRow, VmRow
from corral.server.services import hosts
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op


async def _vm(stack: object, vm_id: str) -> tuple[str, str]:
    async with stack.server.services.sessionmaker() as s:  # type: ignore[attr-defined]
        vm = await s.get(VmRow, vm_id)
        assert vm is not None
        return vm.status, vm.power_state


async def test_reports_follow_the_rules(tmp_path: Path, database_url: str | None) -> None:
    async with (
        running_stack(tmp_path, sim_hosts=1, database_url=database_url) as stack,
        api_client(stack) as c,
    ):
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        r = await c.post("/vms", json={"name": "v", "image": "tiny", "cpus": 1, "memory_mb": 64})
        assert (await wait_op(c, r.json()))["status"] == "succeeded"
        vm_id = r.json()["target_id"]
        svc = stack.server.services
        async with svc.sessionmaker() as s:
            host = await s.get(HostRow, (await s.get(VmRow, vm_id)).host_id)  # type: ignore[union-attr]
        assert host is not None
        for runtime in stack.agent.runtimes.values():
            await runtime.heartbeat.stop()  # only the reports below
            await runtime.events.stop()
        now = datetime.now(UTC)

        def event(power: PowerState, at: datetime, vm: str = vm_id) -> VmEvent:
            return VmEvent(vm_id=vm, power_state=power, at=at)

        # stale (observed before the VM's last change), other host, unknown VM: nothing changes
        await hosts.record_events(
            svc=svc, host=host, events=[event(PowerState.stopped, now - timedelta(hours=1))]
        )
        other = HostRow(id="0" * 32, name="other", cluster_id=host.cluster_id, url="x")
        await hosts.record_events(svc=svc, host=other, events=[event(PowerState.stopped, now)])
        await hosts.record_events(
            svc=svc, host=host, events=[event(PowerState.stopped, now, vm="f" * 32)]
        )
        assert await _vm(stack, vm_id) == ("running", "running")

        # a steady VM follows (in order: the last report wins), crashed counts as stopped
        later = datetime.now(UTC) + timedelta(seconds=1)
        await hosts.record_events(
            svc=svc,
            host=host,
            events=[event(PowerState.paused, later), event(PowerState.crashed, later)],
        )
        assert await _vm(stack, vm_id) == ("stopped", "crashed")

        # a VM under an operation keeps its status, its power state follows
        async with svc.sessionmaker.begin() as s:
            await s.execute(update(VmRow).where(VmRow.id == vm_id).values(status="starting"))
        await hosts.apply_power_state(
            svc, host.id, vm_id, PowerState.running, datetime.now(UTC) + timedelta(seconds=2)
        )
        assert await _vm(stack, vm_id) == ("starting", "running")
