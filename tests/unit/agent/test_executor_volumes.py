"""The agent's volume tasks with the simulator compute driver and a fake pool backend: pool
operations, hot-plug, live grow, QoS, the stored spec kept in step, undo when the spec write
fails, per-task fault injection, serialization keys and reconcile of data disks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent.compute.simulator import SimHost, SimulatorDriver
from corral.agent.executor import Payload, TaskExecutor, payload_key
from corral.agent.faults import FaultPlan
from corral.agent.reconcile import reconcile
from corral.agent.runtime import HostRuntime
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.backend import DiskSource, PoolUsage
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    AgentTask,
    DataDisk,
    ImageRef,
    PoolRef,
    TaskState,
    VmDefine,
    VmPower,
    VmSpec,
    VolumeAttachTask,
    VolumeCreateTask,
    VolumeDeleteTask,
    VolumeDetachTask,
    VolumeQosTask,
    VolumeRef,
    VolumeResizeTask,
)
from corral.api.errors import (
    InjectedFault,
    InvalidInput,
    InvalidState,
    NotFound,
    StorageError,
)
from corral.api.volumes import VolumeQos
from tests.unit.agent.fakes import FakeVolumes

GIB = 1024**3
POOL = PoolRef(id="pool-1", type="local", settings={"path": "/srv/pool"})


class FakeBackend:
    """A ``VolumeBackend`` keeping volumes as {volume_id: size_gb}; records its calls."""

    def __init__(self) -> None:
        self.volumes: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []

    async def create(self, volume: VolumeRef) -> None:
        self.calls.append(("create", volume.volume_id))
        self.volumes.setdefault(volume.volume_id, volume.size_gb)

    async def delete(self, volume: VolumeRef) -> None:
        self.calls.append(("delete", volume.volume_id))
        self.volumes.pop(volume.volume_id, None)

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        self.calls.append(("resize", volume.volume_id))
        self.volumes[volume.volume_id] = max(self.volumes[volume.volume_id], size_gb)

    def source(self, volume: VolumeRef) -> DiskSource:
        return DiskSource(kind="file", format=volume.format, path=f"/srv/pool/{volume.name}")

    async def usage(self, pool: PoolRef) -> PoolUsage:
        return PoolUsage(total_gb=100, free_gb=100)


class FlakySpecStore(SpecStore):
    """A spec store whose writes fail while ``failing`` is set."""

    failing = False

    def put(self, stored: StoredSpec) -> None:
        if self.failing:
            raise StorageError("disk full")
        super().put(stored)


def volume(volume_id: str = "vol1", size_gb: int = 1) -> VolumeRef:
    return VolumeRef(volume_id=volume_id, pool=POOL, name=f"v-{volume_id}", size_gb=size_gb)


def data_disk(volume_id: str = "vol1", device: str = "vdb", **kw: object) -> DataDisk:
    return DataDisk(volume=volume(volume_id), device=device, **kw)  # type: ignore[arg-type]


def vm_spec(vm_id: str = "vm-1", disks: list[DataDisk] | None = None) -> VmSpec:
    return VmSpec(
        vm_id=vm_id,
        name=vm_id,
        cpus=1,
        memory_mb=256,
        disk_gb=1,
        vnc_password="pw",
        disks=disks or [],
    )


class Kit:
    def __init__(self, tmp: Path) -> None:
        self.faults = FaultPlan()
        self.sim = SimulatorDriver(SimHost(name="h1"), faults=self.faults)
        self.backend = FakeBackend()
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
            backends=Backends({"local": self.backend}),
        )

    async def run(self, payload: Payload) -> dict[str, object]:
        return await self.ex.run(payload)

    def spec_disks(self, vm_id: str = "vm-1") -> list[DataDisk]:
        stored = self.specs.get(vm_id)
        assert stored is not None
        reread = SpecStore(self.specs.directory)  # what is on disk, not just the cache
        reread.open()
        assert reread.get(vm_id) == stored
        return stored.spec.disks

    def sim_volumes(self, vm_id: str = "vm-1") -> list[str]:
        return list(self.sim.vms[vm_id].disks)


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    k = Kit(tmp_path)
    await k.sim.open(lambda event: None)
    await k.run(VmDefine(spec=vm_spec()))
    yield k
    await k.sim.close()


async def test_create_and_delete_go_to_the_pool_backend(kit: Kit) -> None:
    await kit.run(VolumeCreateTask(volume=volume()))
    await kit.run(VolumeCreateTask(volume=volume()))
    assert kit.backend.volumes == {"vol1": 1}
    await kit.run(VolumeDeleteTask(volume=volume()))
    await kit.run(VolumeDeleteTask(volume=volume()))
    assert kit.backend.volumes == {}


async def test_delete_is_refused_while_a_vm_here_lists_the_volume(kit: Kit) -> None:
    await kit.run(VolumeCreateTask(volume=volume()))
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    with pytest.raises(InvalidState) as err:
        await kit.run(VolumeDeleteTask(volume=volume()))
    assert err.value.context["vm_ids"] == ["vm-1"]
    assert kit.backend.volumes == {"vol1": 1}
    await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1"))
    await kit.run(VolumeDeleteTask(volume=volume()))
    assert kit.backend.volumes == {}


async def test_define_hands_the_driver_each_disk_with_its_source(kit: Kit) -> None:
    disks = [data_disk("vol1", "vdb"), data_disk("vol2", "vdc")]
    await kit.run(VmDefine(spec=vm_spec(disks=disks)))
    sim_disks = kit.sim.vms["vm-1"].disks
    assert list(sim_disks) == ["vol1", "vol2"]
    assert sim_disks["vol2"].source.path == "/srv/pool/v-vol2"
    assert kit.spec_disks() == disks


async def test_a_spec_with_a_pool_type_this_host_lacks_is_refused_before_the_driver(
    kit: Kit,
) -> None:
    rbd = PoolRef(id="p2", type="rbd", settings={})
    disk = DataDisk(volume=VolumeRef(volume_id="v9", pool=rbd, name="i", size_gb=1), device="vdb")
    with pytest.raises(InvalidInput, match="rbd"):
        await kit.run(VmDefine(spec=vm_spec(disks=[disk])))
    assert kit.sim_volumes() == [] and kit.spec_disks() == []


async def test_attach_to_a_running_vm_then_again_is_success(kit: Kit) -> None:
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    for _ in range(2):
        assert await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk())) == {}
    assert kit.sim_volumes() == ["vol1"]
    assert kit.spec_disks() == [data_disk()]
    assert kit.sim.vms["vm-1"].disks["vol1"].size_bytes == GIB


async def test_attach_conflicts_are_invalid_state(kit: Kit) -> None:
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk("vol1", "vdb")))
    with pytest.raises(InvalidState, match="already attached"):
        await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk("vol1", "vdc")))
    with pytest.raises(InvalidState, match="used by another"):
        await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk("vol2", "vdb")))
    assert kit.sim_volumes() == ["vol1"]


async def test_attach_to_a_vm_without_spec_is_not_found(kit: Kit) -> None:
    with pytest.raises(NotFound):
        await kit.run(VolumeAttachTask(vm_id="vm-9", disk=data_disk()))


async def test_shareable_qcow2_is_refused_by_the_driver(kit: Kit) -> None:
    with pytest.raises(InvalidInput, match="raw"):
        await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk(shareable=True)))
    assert kit.spec_disks() == []


async def test_attach_undone_when_the_spec_cannot_be_written(kit: Kit) -> None:
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    kit.specs.failing = True
    with pytest.raises(StorageError):
        await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    kit.specs.failing = False
    assert kit.sim_volumes() == []
    assert kit.sim.calls["vm.detach_disk"] == 1
    assert kit.spec_disks() == []


async def test_faults_stop_the_task_before_anything_changes(kit: Kit) -> None:
    kit.faults.fail_next("agent.volume.attach")
    with pytest.raises(InjectedFault):
        await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    kit.faults.fail_next("vm.attach_disk")
    with pytest.raises(InjectedFault):
        await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    assert kit.sim_volumes() == [] and kit.spec_disks() == []
    for kind in ("create", "delete", "detach", "resize", "qos"):
        kit.faults.fail_next(f"agent.volume.{kind}")
    payloads: list[Payload] = [
        VolumeCreateTask(volume=volume()),
        VolumeDeleteTask(volume=volume()),
        VolumeDetachTask(vm_id="vm-1", volume_id="vol1"),
        VolumeResizeTask(volume=volume(), size_gb=2),
        VolumeQosTask(vm_id="vm-1", volume_id="vol1", qos=VolumeQos()),
    ]
    for payload in payloads:
        with pytest.raises(InjectedFault):
            await kit.run(payload)
    assert kit.backend.calls == []


async def test_detach_waits_for_the_guest_and_keeps_everything_if_it_holds_on(kit: Kit) -> None:
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    kit.sim.guest_holds_disk("vm-1", "vol1")
    with pytest.raises(InvalidState, match="did not release the disk"):
        await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1", timeout=0.05))
    assert kit.sim_volumes() == ["vol1"] and kit.spec_disks() == [data_disk()]
    kit.sim.guest_holds_disk("vm-1", "vol1", hold=False)
    await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1"))
    assert kit.sim_volumes() == [] and kit.spec_disks() == []
    await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1"))  # not attached: success


async def test_detach_of_a_stopped_vm_ignores_the_guest(kit: Kit) -> None:
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    kit.sim.guest_holds_disk("vm-1", "vol1")
    await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1", timeout=0))
    assert kit.sim_volumes() == [] and kit.spec_disks() == []


async def test_detach_undone_when_the_spec_cannot_be_written(kit: Kit) -> None:
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    kit.specs.failing = True
    with pytest.raises(StorageError):
        await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1"))
    kit.specs.failing = False
    assert kit.sim_volumes() == ["vol1"] and kit.spec_disks() == [data_disk()]


async def test_resize_is_live_when_the_vm_runs_and_on_the_pool_otherwise(kit: Kit) -> None:
    await kit.run(VolumeCreateTask(volume=volume()))
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    task = VolumeResizeTask(volume=volume(), size_gb=2, vm_id="vm-1")
    assert await kit.run(task) == {"live": True}
    assert kit.sim.vms["vm-1"].disks["vol1"].size_bytes == 2 * GIB
    assert ("resize", "vol1") not in kit.backend.calls
    assert kit.spec_disks()[0].volume.size_gb == 2

    await kit.run(VmPower(kind="vm.stop", vm_id="vm-1"))
    assert await kit.run(VolumeResizeTask(volume=volume(), size_gb=3, vm_id="vm-1")) == {
        "live": False
    }
    assert kit.backend.volumes == {"vol1": 3}
    assert kit.spec_disks()[0].volume.size_gb == 3
    assert await kit.run(VolumeResizeTask(volume=volume(), size_gb=2)) == {"live": False}
    assert kit.backend.volumes == {"vol1": 3} and kit.spec_disks()[0].volume.size_gb == 3


async def test_qos_applies_and_is_recorded_or_put_back(kit: Kit) -> None:
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    await kit.run(VmPower(kind="vm.start", vm_id="vm-1"))
    qos = VolumeQos(total_iops_sec=100)
    await kit.run(VolumeQosTask(vm_id="vm-1", volume_id="vol1", qos=qos))
    assert kit.sim.vms["vm-1"].disks["vol1"].disk.qos == qos
    assert kit.spec_disks()[0].qos == qos

    kit.specs.failing = True
    with pytest.raises(StorageError):
        await kit.run(VolumeQosTask(vm_id="vm-1", volume_id="vol1", qos=VolumeQos()))
    kit.specs.failing = False
    assert kit.sim.vms["vm-1"].disks["vol1"].disk.qos == qos
    assert kit.spec_disks()[0].qos == qos
    with pytest.raises(NotFound):
        await kit.run(VolumeQosTask(vm_id="vm-1", volume_id="nope", qos=qos))


async def test_keys_and_ids() -> None:
    assert payload_key(VolumeCreateTask(volume=volume())) == "volume:vol1"
    assert payload_key(VolumeResizeTask(volume=volume(), size_gb=2)) == "volume:vol1"
    assert payload_key(VolumeResizeTask(volume=volume(), size_gb=2, vm_id="vm-1")) == "vm-1"
    assert payload_key(VolumeAttachTask(vm_id="vm-1", disk=data_disk())) == "vm-1"
    assert payload_key(VmPower(kind="vm.start", vm_id="vm-2")) == "vm-2"


async def test_unusable_volume_ids_are_refused(kit: Kit) -> None:
    with pytest.raises(InvalidInput, match="volume id"):
        await kit.run(VolumeCreateTask(volume=volume("../x")))
    with pytest.raises(InvalidInput, match="volume id"):
        await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="a.b"))


async def test_reconcile_redefines_lost_vms_with_their_disks_and_reports_volume_drift(
    kit: Kit,
) -> None:
    await kit.run(VolumeAttachTask(vm_id="vm-1", disk=data_disk()))
    backends = Backends({"local": kit.backend})
    assert await reconcile(compute=kit.sim, specs=kit.specs, backends=backends) == {}

    await kit.sim.undefine("vm-1")  # the definition was lost
    notes = await reconcile(compute=kit.sim, specs=kit.specs, backends=backends)
    assert notes == {"vm-1": ["redefined from local spec"]}
    assert kit.sim_volumes() == ["vol1"]

    await kit.sim.detach_disk("vm-1", "vol1", 1)  # behind the agent's back
    notes = await reconcile(compute=kit.sim, specs=kit.specs, backends=backends)
    assert notes == {"vm-1": ["volumes [] != spec ['vol1']"]}
    kit.drift.update(notes)
    await kit.run(VolumeDetachTask(vm_id="vm-1", volume_id="vol1"))
    assert kit.drift == {}


async def test_runtime_runs_volume_tasks(tmp_path: Path) -> None:
    sim, backend = SimulatorDriver(SimHost(name="h1")), FakeBackend()
    rt = HostRuntime(
        name="t",
        data_dir=tmp_path / "agent",
        compute=sim,
        volumes=FakeVolumes(tmp_path / "pool"),
        backends=Backends({"local": backend}),
        inline_wait=5,
    )
    await rt.start()
    try:
        tasks = [
            {"kind": "volume.create", "volume": volume().model_dump()},
            {"kind": "vm.define", "spec": vm_spec().model_dump()},
            {"kind": "volume.attach", "vm_id": "vm-1", "disk": data_disk().model_dump()},
        ]
        for i, payload in enumerate(tasks):
            task = AgentTask.model_validate({"task_id": f"t{i}", "payload": payload})
            status = await rt.submit(task)
            assert status.state == TaskState.succeeded, status.error
        assert backend.volumes == {"vol1": 1}
        assert list(sim.vms["vm-1"].disks) == ["vol1"]
    finally:
        await rt.stop()
