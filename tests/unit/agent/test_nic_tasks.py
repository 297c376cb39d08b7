"""The agent's NIC tasks (``nic.attach``, ``nic.detach``) with the simulator compute driver:
cold and hot plug, idempotency, conflicts, a guest that holds on, the stored spec kept in step
(undone when it cannot be written), fault injection, serialization, reconcile and the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent.compute.simulator import SimHost, SimLatencies, SimulatorDriver
from corral.agent.executor import Payload, TaskExecutor, payload_key
from corral.agent.faults import FaultPlan
from corral.agent.reconcile import reconcile
from corral.agent.runtime import HostRuntime
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    AgentTask,
    ImageRef,
    NicAttachTask,
    NicDetachTask,
    NicSpec,
    TaskState,
    VmDefine,
    VmPower,
    VmSpec,
)
from corral.api.errors import InjectedFault, InvalidInput, InvalidState, NotFound, StorageError
from tests.unit.agent.fakes import FakeVolumes


def nic(nic_id: str = "nic1", mac: str = "02:00:00:00:00:01", **kw: object) -> NicSpec:
    return NicSpec.model_validate({"nic_id": nic_id, "mac": mac, **kw})


def vm_spec(vm_id: str = "vm-1", nics: list[NicSpec] | None = None) -> VmSpec:
    return VmSpec(
        vm_id=vm_id,
        name=vm_id,
        cpus=1,
        memory_mb=256,
        disk_gb=1,
        vnc_password="pw",
        nics=nics or [],
    )


class FlakySpecStore(SpecStore):
    """A spec store whose writes fail while ``failing`` is set."""

    failing = False

    def put(self, stored: StoredSpec) -> None:
        if self.failing:
            raise StorageError("disk full")
        super().put(stored)


class Kit:
    def __init__(self, tmp: Path, latencies: SimLatencies | None = None) -> None:
        self.faults = FaultPlan()
        self.sim = SimulatorDriver(SimHost(name="h1"), faults=self.faults, latencies=latencies)
        self.specs = FlakySpecStore(tmp / "vms")
        self.specs.open()
        self.drift: dict[str, list[str]] = {}

        async def fetch(image: ImageRef, dest: Path) -> None:
            raise AssertionError("no image is fetched here")

        self.ex = TaskExecutor(
            compute=self.sim,
            volumes=FakeVolumes(tmp / "pool"),
            specs=self.specs,
            faults=self.faults,
            fetch=fetch,
            drift=self.drift,
        )

    async def run(self, payload: Payload) -> dict[str, object]:
        return await self.ex.run(payload)

    def spec_nics(self, vm_id: str = "vm-1") -> list[NicSpec]:
        stored = self.specs.get(vm_id)
        assert stored is not None
        reread = SpecStore(self.specs.directory)  # what is on disk, not just the cache
        reread.open()
        assert reread.get(vm_id) == stored
        return stored.spec.nics

    def sim_nics(self, vm_id: str = "vm-1") -> list[str]:
        return list(self.sim.vms[vm_id].nics)


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    k = Kit(tmp_path)
    await k.sim.open(lambda event: None)
    await k.run(VmDefine(spec=vm_spec()))
    yield k
    await k.sim.close()


async def test_define_records_the_spec_nics_in_order(kit: Kit) -> None:
    nics = [nic("b", "02:00:00:00:00:0b", tag=10), nic("a", "02:00:00:00:00:0a")]
    await kit.run(VmDefine(spec=vm_spec(nics=nics)))
    assert kit.sim_nics() == ["b", "a"]
    assert kit.sim.vms["vm-1"].nics["b"].tag == 10
    assert kit.spec_nics() == nics


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
async def test_attach_then_again_is_success_and_detach_then_again_too(
    kit: Kit, running: bool
) -> None:
    if running:
        await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    first, second = nic("n1", "02:00:00:00:00:01"), nic("n2", "02:00:00:00:00:02", model="e1000")
    for _ in range(2):
        assert await kit.run(NicAttachTask(vm_id="vm-1", nic=first)) == {}
    await kit.run(NicAttachTask(vm_id="vm-1", nic=second))
    assert kit.sim_nics() == ["n1", "n2"]
    assert kit.spec_nics() == [first, second]
    for _ in range(2):
        assert await kit.run(NicDetachTask(vm_id="vm-1", nic_id="n1")) == {}
    assert kit.sim_nics() == ["n2"]
    assert kit.spec_nics() == [second]
    assert kit.sim.calls["vm.attach_nic"] == 3 and kit.sim.calls["vm.detach_nic"] == 2


async def test_a_nic_the_vm_lost_is_plugged_again_by_a_retried_attach(kit: Kit) -> None:
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    await kit.sim.detach_nic("vm-1", "nic1", 0)  # behind the agent's back
    kit.drift["vm-1"] = ["nics [] != spec ['nic1']", "cpus 2 != spec 1"]
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    assert kit.sim_nics() == ["nic1"] and kit.spec_nics() == [nic()]
    assert kit.drift == {"vm-1": ["cpus 2 != spec 1"]}  # only the NIC notes are cleared


async def test_attach_conflicts_are_invalid_state_and_change_nothing(kit: Kit) -> None:
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic(tag=5)))
    conflicts = [
        nic(tag=6),  # same id, other settings: detach first
        nic("other", "02:00:00:00:00:01"),  # the MAC of nic1
        nic("other", "02:00:00:00:00:09", port=nic().port),  # the port of nic1
    ]
    for conflict in conflicts:
        with pytest.raises(InvalidState):
            await kit.run(NicAttachTask(vm_id="vm-1", nic=conflict))
    assert kit.sim_nics() == ["nic1"] and kit.spec_nics() == [nic(tag=5)]
    assert kit.sim.calls["vm.attach_nic"] == 1


async def test_the_driver_refuses_a_clash_the_spec_does_not_know_of(kit: Kit) -> None:
    await kit.sim.attach_nic("vm-1", nic("ghost", "02:00:00:00:00:01"))  # not in the spec
    with pytest.raises(InvalidState, match="another NIC"):
        await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    assert kit.spec_nics() == []


async def test_attach_to_a_vm_without_spec_is_not_found_and_detach_is_success(kit: Kit) -> None:
    with pytest.raises(NotFound):
        await kit.run(NicAttachTask(vm_id="vm-9", nic=nic()))
    await kit.run(NicDetachTask(vm_id="vm-9", nic_id="nic1"))


async def test_attach_undone_when_the_spec_cannot_be_written(kit: Kit) -> None:
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    kit.specs.failing = True
    with pytest.raises(StorageError):
        await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    kit.specs.failing = False
    assert kit.sim_nics() == [] and kit.spec_nics() == []
    assert kit.sim.calls["vm.detach_nic"] == 1


async def test_detach_undone_when_the_spec_cannot_be_written(kit: Kit) -> None:
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic(tag=7)))
    kit.specs.failing = True
    with pytest.raises(StorageError):
        await kit.run(NicDetachTask(vm_id="vm-1", nic_id="nic1"))
    kit.specs.failing = False
    assert kit.sim_nics() == ["nic1"] and kit.sim.vms["vm-1"].nics["nic1"].tag == 7
    assert kit.spec_nics() == [nic(tag=7)]


async def test_detach_waits_for_the_guest_and_keeps_everything_if_it_holds_on(kit: Kit) -> None:
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    kit.sim.guest_holds_nic("vm-1", "nic1")
    with pytest.raises(InvalidState, match="did not release the NIC"):
        await kit.run(NicDetachTask(vm_id="vm-1", nic_id="nic1", timeout=0.05))
    assert kit.sim_nics() == ["nic1"] and kit.spec_nics() == [nic()]

    detach = asyncio.create_task(kit.run(NicDetachTask(vm_id="vm-1", nic_id="nic1", timeout=5)))
    await asyncio.sleep(0.05)
    assert not detach.done()
    kit.sim.guest_holds_nic("vm-1", "nic1", hold=False)  # the guest lets go
    await detach
    assert kit.sim_nics() == [] and kit.spec_nics() == []


async def test_a_stopped_vm_drops_a_held_nic_at_once(kit: Kit) -> None:
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    kit.sim.guest_holds_nic("vm-1", "nic1")
    await kit.run(NicDetachTask(vm_id="vm-1", nic_id="nic1", timeout=0))
    assert kit.sim_nics() == []


async def test_faults_stop_the_task_before_anything_changes(kit: Kit) -> None:
    kit.faults.fail_next("agent.nic.attach")
    with pytest.raises(InjectedFault):
        await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    kit.faults.fail_next("vm.attach_nic")
    with pytest.raises(InjectedFault):
        await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    assert kit.sim_nics() == [] and kit.spec_nics() == []
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    for op in ("agent.nic.detach", "vm.detach_nic"):
        kit.faults.fail_next(op)
        with pytest.raises(InjectedFault):
            await kit.run(NicDetachTask(vm_id="vm-1", nic_id="nic1"))
    assert kit.sim_nics() == ["nic1"] and kit.spec_nics() == [nic()]


async def test_nic_tasks_are_serialized_on_their_vm() -> None:
    assert payload_key(NicAttachTask(vm_id="vm-1", nic=nic())) == "vm-1"
    assert payload_key(NicDetachTask(vm_id="vm-2", nic_id="nic1")) == "vm-2"


async def test_unusable_vm_ids_are_refused(kit: Kit) -> None:
    with pytest.raises(InvalidInput):
        await kit.run(NicAttachTask(vm_id="../x", nic=nic()))


async def test_reconcile_redefines_a_lost_vm_with_its_nics(kit: Kit) -> None:
    await kit.run(NicAttachTask(vm_id="vm-1", nic=nic()))
    await kit.sim.undefine("vm-1")  # the definition was lost
    notes = await reconcile(compute=kit.sim, specs=kit.specs, backends=Backends({}))
    assert notes == {"vm-1": ["redefined from local spec"]}
    assert kit.sim_nics() == ["nic1"]


async def test_runtime_runs_nic_tasks_one_after_another_per_vm(tmp_path: Path) -> None:
    sim = SimulatorDriver(SimHost(name="h1"), latencies=SimLatencies(attach_nic=0.05))
    rt = HostRuntime(
        name="t",
        data_dir=tmp_path / "agent",
        compute=sim,
        volumes=FakeVolumes(tmp_path / "pool"),
        inline_wait=5,
    )
    await rt.start()
    try:
        define = {"kind": "vm.define", "spec": vm_spec().model_dump()}
        task = AgentTask.model_validate({"task_id": "t0", "payload": define})
        assert (await rt.submit(task)).state == TaskState.succeeded
        attaches = [
            AgentTask.model_validate(
                {
                    "task_id": f"t{i}",
                    "payload": {
                        "kind": "nic.attach",
                        "vm_id": "vm-1",
                        "nic": nic(f"n{i}", f"02:00:00:00:00:0{i}").model_dump(),
                    },
                }
            )
            for i in range(1, 4)
        ]
        statuses = await asyncio.gather(*(rt.submit(t) for t in attaches))
        assert all(s.state == TaskState.succeeded for s in statuses), statuses
        # Serialized on the VM: no spec write lost, every NIC listed.
        stored = rt.specs.get("vm-1")
        assert stored is not None
        assert sorted(n.nic_id for n in stored.spec.nics) == ["n1", "n2", "n3"]
        assert sorted(sim.vms["vm-1"].nics) == ["n1", "n2", "n3"]
        detach = AgentTask.model_validate(
            {"task_id": "t9", "payload": {"kind": "nic.detach", "vm_id": "vm-1", "nic_id": "n2"}}
        )
        assert (await rt.submit(detach)).state == TaskState.succeeded
        assert sorted(sim.vms["vm-1"].nics) == ["n1", "n3"]
    finally:
        await rt.stop()
