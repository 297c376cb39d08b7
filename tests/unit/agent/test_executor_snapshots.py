"""The agent's snapshot tasks with the simulator compute driver and the simulated pool backend:
live and offline snapshots, reverts, live pulls and offline rebases, file deletes; the stored
spec always naming the active file, idempotent retries, nothing left after a failed create,
refusals (wrong active file, running VM, unknown VM), fault injection and serialization keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent.compute.simulator import SimHost, SimulatorDriver
from corral.agent.executor import Payload, TaskExecutor, payload_key
from corral.agent.faults import FaultPlan
from corral.agent.runtime import HostRuntime
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.backend import DiskSource
from corral.agent.storage.simulated_volumes import SimulatedBackend, sim_own_bytes
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    AgentTask,
    DataDisk,
    ImageRef,
    PoolRef,
    SnapshotCreateTask,
    SnapshotDeleteFileTask,
    SnapshotRebaseTask,
    SnapshotRevertTask,
    TaskState,
    VmDefine,
    VmPower,
    VmSpec,
    VolumeAttachTask,
    VolumeRef,
)
from corral.api.errors import (
    DriverError,
    InjectedFault,
    InvalidInput,
    InvalidState,
    NotFound,
    StorageError,
)
from tests.unit.agent.fakes import FakeVolumes

POOL = PoolRef(id="pool-1", type="local", settings={"path": "/srv/pool"})
VM = "vm-1"
VOL = "vol1"


class FlakySpecStore(SpecStore):
    """A spec store whose writes fail while ``failing`` is set."""

    failing = False

    def put(self, stored: StoredSpec) -> None:
        if self.failing:
            raise StorageError("disk full")
        super().put(stored)


def volume(name: str = "v0") -> VolumeRef:
    return VolumeRef(volume_id=VOL, pool=POOL, name=name, size_gb=1)


def vm_spec() -> VmSpec:
    return VmSpec(vm_id=VM, name=VM, cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw")


def src(name: str) -> DiskSource:
    return DiskSource(kind="file", format="qcow2", path=f"sim://h1/volumes/{name}")


class Kit:
    def __init__(self, tmp: Path) -> None:
        self.faults = FaultPlan()
        self.sim = SimulatorDriver(SimHost(name="h1"), faults=self.faults)
        self.backend = SimulatedBackend(host_name="h1", faults=self.faults)
        self.specs = FlakySpecStore(tmp / "vms")
        self.specs.open()

        async def fetch(image: ImageRef, dest: Path) -> None:
            raise AssertionError("no image is fetched here")

        self.ex = TaskExecutor(
            compute=self.sim,
            volumes=FakeVolumes(tmp / "pool"),
            specs=self.specs,
            faults=self.faults,
            fetch=fetch,
            drift={},
            backends=Backends({"local": self.backend}),
        )

    async def run(self, payload: Payload) -> dict[str, object]:
        return await self.ex.run(payload)

    def active(self) -> str:
        """The file the stored spec (as on disk) has the volume on."""
        stored = self.specs.get(VM)
        assert stored is not None
        reread = SpecStore(self.specs.directory)
        reread.open()
        assert reread.get(VM) == stored
        (disk,) = stored.spec.disks
        return disk.volume.name

    def sim_file(self) -> str:
        return self.sim.vms[VM].disks[VOL].source.path

    def chain(self) -> list[str]:
        return [s.path for s in self.sim.vms[VM].disks[VOL].chain]

    def files(self) -> dict[str, str | None]:
        return dict(self.backend.files(POOL.id))

    async def start(self) -> None:
        await self.run(VmPower(kind="vm.start", vm_id=VM))

    async def stop(self) -> None:
        await self.run(VmPower(kind="vm.stop", vm_id=VM, force=True))


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    k = Kit(tmp_path)
    await k.sim.open(lambda event: None)
    await k.run(VmDefine(spec=vm_spec()))
    await k.run(VolumeAttachTask(vm_id=VM, disk=DataDisk(volume=volume(), device="vdb")))
    yield k
    await k.sim.close()


def own(name: str) -> int:
    """What the simulated file ``name`` holds of its own (``SimulatedBackend.allocated``)."""
    return sim_own_bytes(POOL.id, name)


def made(live: bool, frozen: str) -> dict[str, object]:
    """``snapshot.create``'s result, ``frozen`` being the file frozen (measured after it)."""
    return {"live": live, "frozen_bytes": own(frozen)}


def create(active: str, new: str, *, vm: str | None = VM, quiesce: bool = False) -> Payload:
    return SnapshotCreateTask(volume=volume(active), new_name=new, vm_id=vm, quiesce=quiesce)


async def test_live_snapshot_switches_the_disk_then_the_spec(kit: Kit) -> None:
    await kit.start()
    assert await kit.run(create("v0", "v1", quiesce=True)) == made(True, "v0")
    assert kit.sim_file() == src("v1").path and kit.chain() == [src("v0").path]
    assert kit.active() == "v1"
    assert kit.files() == {"v1": "v0"}
    assert kit.sim.calls["vm.snapshot_disk"] == 1

    assert await kit.run(create("v0", "v1")) == made(True, "v0")  # done already
    assert kit.sim.calls["vm.snapshot_disk"] == 1 and kit.active() == "v1"

    await kit.run(VmPower(kind="vm.pause", vm_id=VM))  # paused counts as live
    assert await kit.run(create("v1", "v2")) == made(True, "v1")
    assert kit.chain() == [src("v1").path, src("v0").path] and kit.active() == "v2"


async def test_offline_snapshot_redefines_the_stopped_vm(kit: Kit) -> None:
    defines = kit.sim.calls["vm.define"]
    assert await kit.run(create("v0", "v1")) == made(False, "v0")
    assert kit.files() == {"v1": "v0"}
    assert kit.sim_file() == src("v1").path and kit.active() == "v1"
    assert kit.sim.calls["vm.define"] == defines + 1
    assert kit.sim.calls["vm.snapshot_disk"] == 0
    assert await kit.run(create("v0", "v1")) == made(False, "v0")
    assert kit.sim.calls["vm.define"] == defines + 1

    await kit.start()  # the VM boots on the new file
    assert kit.sim_file() == src("v1").path


async def test_snapshot_of_a_volume_without_vm(kit: Kit) -> None:
    with pytest.raises(InvalidState, match="name the VM") as err:
        await kit.run(create("v0", "v1", vm=None))  # a VM here has it: the server must say so
    assert err.value.context["vm_ids"] == [VM]
    other = SnapshotCreateTask(
        volume=volume("w0").model_copy(update={"volume_id": "vol2"}), new_name="w1"
    )
    for _ in range(2):
        assert await kit.run(other) == made(False, "w0")
    assert kit.files() == {"w1": "w0"}


async def test_refusals(kit: Kit) -> None:
    with pytest.raises(InvalidState, match="active file") as err:
        await kit.run(create("v7", "v8"))  # the server's idea of the active file is wrong
    assert err.value.context["active"] == "v0"
    with pytest.raises(InvalidInput, match="distinct"):
        await kit.run(create("v0", "v0"))
    with pytest.raises(NotFound):
        await kit.run(create("v0", "v1", vm="vm-9"))
    with pytest.raises(NotFound, match="not attached"):
        await kit.run(
            SnapshotCreateTask(
                volume=volume().model_copy(update={"volume_id": "vol9"}), new_name="x", vm_id=VM
            )
        )
    assert kit.files() == {} and kit.active() == "v0"


async def test_a_failed_live_switch_leaves_nothing(kit: Kit) -> None:
    await kit.start()
    kit.faults.fail_next("vm.snapshot_disk", DriverError("guest agent not responding"))
    with pytest.raises(DriverError):
        await kit.run(create("v0", "v1", quiesce=True))
    assert kit.files() == {}
    assert kit.sim_file() == src("v0").path and kit.chain() == []
    assert kit.active() == "v0"
    assert await kit.run(create("v0", "v1")) == made(True, "v0")  # a retry goes through
    assert kit.files() == {"v1": "v0"} and kit.active() == "v1"


async def test_a_failed_overlay_leaves_the_vm_alone(kit: Kit) -> None:
    await kit.start()
    kit.faults.fail_next("volume.create_overlay", StorageError("no space"))
    with pytest.raises(StorageError):
        await kit.run(create("v0", "v1"))
    assert kit.sim.calls["vm.snapshot_disk"] == 0 and kit.sim_file() == src("v0").path


async def test_a_spec_write_failing_after_a_live_switch_is_finished_by_a_retry(kit: Kit) -> None:
    await kit.start()
    kit.specs.failing = True
    with pytest.raises(StorageError, match="disk full"):
        await kit.run(create("v0", "v1"))
    kit.specs.failing = False
    assert kit.sim_file() == src("v1").path  # the VM switched: the overlay is kept
    assert kit.files() == {"v1": "v0"} and kit.active() == "v0"
    assert await kit.run(create("v0", "v1")) == made(True, "v0")
    assert kit.active() == "v1" and kit.chain() == [src("v0").path]


async def test_a_failed_offline_switch_leaves_nothing(kit: Kit) -> None:
    kit.faults.fail_next("vm.define")
    with pytest.raises(InjectedFault):
        await kit.run(create("v0", "v1"))
    assert kit.files() == {} and kit.active() == "v0" and kit.sim_file() == src("v0").path

    kit.specs.failing = True  # the driver switched, the spec write fails: define undoes it
    with pytest.raises(StorageError):
        await kit.run(create("v0", "v1"))
    kit.specs.failing = False
    assert kit.files() == {} and kit.active() == "v0" and kit.sim_file() == src("v0").path


async def test_revert_needs_a_stopped_vm_and_deletes_the_old_active_file(kit: Kit) -> None:
    await kit.start()
    await kit.run(create("v0", "v1"))
    await kit.run(create("v1", "v2"))
    revert = SnapshotRevertTask(volume=volume("v2"), target="v0", new_name="v3", vm_id=VM)
    with pytest.raises(InvalidState, match="stop it"):
        await kit.run(revert)
    await kit.stop()
    for _ in range(2):
        assert await kit.run(revert) == {}
    assert kit.files() == {"v1": "v0", "v3": "v0"}  # v2 is gone
    assert kit.active() == "v3" and kit.sim_file() == src("v3").path
    await kit.start()
    assert kit.sim_file() == src("v3").path

    with pytest.raises(InvalidInput, match="distinct"):
        await kit.run(SnapshotRevertTask(volume=volume("v3"), target="v3", new_name="v4"))


async def test_a_failed_revert_keeps_the_old_active_file(kit: Kit) -> None:
    await kit.run(create("v0", "v1"))
    kit.faults.fail_next("vm.define")
    revert = SnapshotRevertTask(volume=volume("v1"), target="v0", new_name="v2", vm_id=VM)
    with pytest.raises(InjectedFault):
        await kit.run(revert)
    assert kit.files() == {"v1": "v0"} and kit.active() == "v1"
    await kit.run(revert)
    assert kit.files() == {"v2": "v0"} and kit.active() == "v2"


async def test_revert_of_a_volume_without_vm(kit: Kit) -> None:
    ref = volume("w1").model_copy(update={"volume_id": "vol2"})
    await kit.run(SnapshotCreateTask(volume=ref.model_copy(update={"name": "w0"}), new_name="w1"))
    task = SnapshotRevertTask(volume=ref, target="w0", new_name="w2")
    for _ in range(2):
        await kit.run(task)
    assert kit.files() == {"w2": "w0"}


async def test_live_rebase_is_a_block_pull_of_the_active_file(kit: Kit) -> None:
    await kit.start()
    for old, new in (("v0", "v1"), ("v1", "v2"), ("v2", "v3")):
        await kit.run(create(old, new))
    assert kit.chain() == [src(n).path for n in ("v2", "v1", "v0")]

    pull = SnapshotRebaseTask(volume=volume("v3"), name="v3", backing="v1", vm_id=VM, live=True)
    assert await kit.run(pull) == {"live": True, "bytes": own("v3")}  # no node: not merged
    assert kit.chain() == [src("v1").path, src("v0").path]
    await kit.run(pull)
    full = SnapshotRebaseTask(volume=volume("v3"), name="v3", backing=None, vm_id=VM, live=True)
    await kit.run(full)
    assert kit.chain() == [] and kit.active() == "v3"

    with pytest.raises(InvalidState, match="active file"):
        await kit.run(
            SnapshotRebaseTask(volume=volume("v2"), name="v2", backing=None, vm_id=VM, live=True)
        )
    with pytest.raises(InvalidInput, match="needs the VM"):
        await kit.run(SnapshotRebaseTask(volume=volume("v3"), name="v3", backing=None, live=True))
    kit.faults.fail_next("vm.block_pull", DriverError("job failed"))
    with pytest.raises(DriverError):
        await kit.run(pull)
    await kit.stop()
    with pytest.raises(InvalidState, match="offline"):
        await kit.run(full)


async def test_offline_rebase_refuses_the_running_vms_active_file(kit: Kit) -> None:
    await kit.start()
    await kit.run(create("v0", "v1"))
    await kit.run(create("v1", "v2"))
    await kit.run(
        SnapshotRebaseTask(volume=volume("v2"), name="v2", backing="v0", vm_id=VM, live=True)
    )
    # v1 is out of the running chain: rebased offline, with or without the VM named.
    await kit.run(SnapshotRebaseTask(volume=volume("v1"), name="v1", backing=None, vm_id=VM))
    assert kit.files()["v1"] is None
    await kit.run(SnapshotRebaseTask(volume=volume("v1"), name="v1", backing="v0"))
    assert kit.files()["v1"] == "v0"
    with pytest.raises(InvalidState, match="rebase it live") as err:
        await kit.run(SnapshotRebaseTask(volume=volume("v2"), name="v2", backing=None))
    assert err.value.context["vm_id"] == VM
    with pytest.raises(InvalidInput, match="own backing"):
        await kit.run(SnapshotRebaseTask(volume=volume("v1"), name="v1", backing="v1"))


async def test_offline_rebase_of_a_stopped_vms_active_file_redefines_it(kit: Kit) -> None:
    await kit.run(create("v0", "v1"))
    defines = kit.sim.calls["vm.define"]
    task = SnapshotRebaseTask(volume=volume("v1"), name="v1", backing=None, vm_id=VM)
    assert await kit.run(task) == {"live": False, "bytes": own("v1") + own("v0")}  # v0 copied
    assert kit.files() == {"v1": None}
    assert kit.sim.calls["vm.define"] == defines + 1 and kit.active() == "v1"


async def test_delete_file_refuses_an_active_file(kit: Kit) -> None:
    await kit.run(create("v0", "v1"))
    with pytest.raises(InvalidState, match="active file") as err:
        await kit.run(SnapshotDeleteFileTask(volume=volume("v1"), name="v1"))
    assert err.value.context["vm_ids"] == [VM]
    await kit.backend.create_overlay(volume(), "x", "v1")
    for _ in range(2):
        assert await kit.run(SnapshotDeleteFileTask(volume=volume("x"), name="x")) == {}
    assert kit.files() == {"v1": "v0"}


async def test_faults_stop_each_task_before_anything_changes(kit: Kit) -> None:
    payloads: list[Payload] = [
        create("v0", "v1"),
        SnapshotRevertTask(volume=volume("v0"), target="v0", new_name="v1", vm_id=VM),
        SnapshotRebaseTask(volume=volume("v0"), name="v0", backing=None, vm_id=VM),
        SnapshotDeleteFileTask(volume=volume("v0"), name="v0"),
    ]
    for payload in payloads:
        kit.faults.fail_next(f"agent.{payload.kind}")
        with pytest.raises(InjectedFault):
            await kit.run(payload)
    assert sum(kit.backend.calls.values()) == 0
    assert kit.files() == {} and kit.active() == "v0"


async def test_keys_and_ids() -> None:
    assert payload_key(create("v0", "v1")) == VM
    assert payload_key(create("v0", "v1", vm=None)) == f"volume:{VOL}"
    revert = SnapshotRevertTask(volume=volume(), target="a", new_name="b")
    assert payload_key(revert) == f"volume:{VOL}"
    rebase = SnapshotRebaseTask(volume=volume(), name="a", backing=None, vm_id="vm-2")
    assert payload_key(rebase) == "vm-2"
    assert payload_key(SnapshotDeleteFileTask(volume=volume(), name="a")) == f"volume:{VOL}"


async def test_unusable_ids_are_refused(kit: Kit) -> None:
    bad = volume().model_copy(update={"volume_id": "../x"})
    with pytest.raises(InvalidInput, match="volume id"):
        await kit.run(SnapshotDeleteFileTask(volume=bad, name="a"))


async def test_runtime_runs_snapshot_tasks(tmp_path: Path) -> None:
    sim = SimulatorDriver(SimHost(name="h1"))
    backend = SimulatedBackend(host_name="h1")
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
        disk = DataDisk(volume=volume(), device="vdb")
        tasks = [
            {"kind": "vm.define", "spec": vm_spec().model_dump()},
            {"kind": "volume.attach", "vm_id": VM, "disk": disk.model_dump()},
            {"kind": "vm.start", "vm_id": VM},
            create("v0", "v1").model_dump(),
            {"kind": "vm.stop", "vm_id": VM, "force": True},
            SnapshotRevertTask(
                volume=volume("v1"), target="v0", new_name="v2", vm_id=VM
            ).model_dump(),
        ]
        for i, payload in enumerate(tasks):
            task = AgentTask.model_validate({"task_id": f"t{i}", "payload": payload})
            status = await rt.submit(task)
            assert status.state == TaskState.succeeded, status.error
        assert status.result == {}
        assert dict(backend.files(POOL.id)) == {"v2": "v0"}
        assert sim.vms[VM].disks[VOL].source == src("v2")
    finally:
        await rt.stop()
