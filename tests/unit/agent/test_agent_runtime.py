"""HostRuntime across restarts: VMs keep running, duplicates answered, lost definitions restored."""

from __future__ import annotations

from pathlib import Path

from corral.agent.reconcile import REDEFINED, UNKNOWN
from corral.agent.runtime import HostRuntime
from corral.api.agent import AgentTask, AttachRequest, TaskState, VmDefine, VmPower
from corral.api.vms import PowerState
from tests.unit.agent.fakes import FakeCompute, FakeVolumes, spec


def make(tmp_path: Path, compute: FakeCompute) -> HostRuntime:
    return HostRuntime(
        name="rt",
        data_dir=tmp_path / "agent",
        compute=compute,
        volumes=FakeVolumes(tmp_path / "pool"),
        inline_wait=1.0,
    )


async def test_restart_keeps_vms_and_answers_duplicates(tmp_path: Path) -> None:
    compute = FakeCompute()
    rt = make(tmp_path, compute)
    await rt.start()
    await rt.attach(
        AttachRequest(host_id="h", token="k" * 32, server_url="http://127.0.0.1:9"),
        authorization=None,
    )
    for tid, payload in [
        ("d1", VmDefine(spec=spec("vm-1"))),
        ("s1", VmPower(kind="vm.start", vm_id="vm-1")),
    ]:
        status = await rt.submit(AgentTask(task_id=tid, payload=payload))
        assert status.state == TaskState.succeeded, status
    await rt.stop()
    calls_before = list(compute.calls)

    rt2 = make(tmp_path, compute)
    await rt2.start()
    try:
        assert compute.opened == 2 and compute.closed == 1
        assert compute.states == {"vm-1": PowerState.running}
        again = await rt2.submit(
            AgentTask(task_id="s1", payload=VmPower(kind="vm.stop", vm_id="vm-1"))
        )
        assert again.result == {"power_state": "running"}
        assert compute.calls == calls_before  # nothing ran, nothing was stopped
        reports = await rt2.vm_reports()
        assert [(r.vm_id, r.power_state, r.drift) for r in reports] == [
            ("vm-1", PowerState.running, [])
        ]
        assert rt2.authenticate("Bearer " + "k" * 32).host_id == "h"
    finally:
        await rt2.stop()


async def test_lost_definition_is_redefined_at_start(tmp_path: Path) -> None:
    compute = FakeCompute()
    rt = make(tmp_path, compute)
    await rt.start()
    await rt.submit(AgentTask(task_id="d1", payload=VmDefine(spec=spec("vm-1"))))
    await rt.stop()
    compute.specs.clear()
    compute.states.clear()
    await compute.define(spec("stray"), "/x")

    rt2 = make(tmp_path, compute)
    await rt2.start()
    try:
        reports = {r.vm_id: r.drift for r in await rt2.vm_reports()}
        assert reports == {"vm-1": [REDEFINED], "stray": [UNKNOWN]}
        # A later define of the VM clears its drift.
        await rt2.submit(AgentTask(task_id="d2", payload=VmDefine(spec=spec("vm-1", cpus=2))))
        reports = {r.vm_id: r.drift for r in await rt2.vm_reports()}
        assert reports["vm-1"] == []
    finally:
        await rt2.stop()
