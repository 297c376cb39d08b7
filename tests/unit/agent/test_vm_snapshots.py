"""Whole-VM snapshots (``vm.snapshot``) and memory states (``vm.memory``) with the simulator
compute driver and the simulated pool backend: two file disks and an rbd disk switched at one
instant with the memory saved, quiesce through the guest agent (or not, when it does not answer),
the VM paused around the switch and resumed; rollback of every failure (overlays deleted, Ceph
snapshots removed, memory file removed, the VM resumed and thawed); idempotent retries; stopped
VMs redefined; refusals; restores and deletes of memory files; serialization on the VM."""

from __future__ import annotations

import stat
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent.compute.libvirt.vm_snapshot import snapshot_xml, with_current_disks
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
    TaskState,
    VmDefine,
    VmMemoryTask,
    VmPower,
    VmSnapshotDisk,
    VmSnapshotTask,
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
from corral.api.vms import PowerState
from tests.unit.agent.fakes import FakeVolumes

LOCAL = PoolRef(id="pool-1", type="local", settings={"path": "/srv/pool"})
NFS = PoolRef(id="pool-2", type="nfs", settings={"server": "nfs1", "export": "/x"})
RBD = PoolRef(id="pool-3", type="rbd", settings={"pool": "vms"})
VM = "vm-1"
FILE_VOLS = ("vol-a", "vol-b")
RBD_VOL = "vol-r"


class Backend(SimulatedBackend):
    """The simulated backend, with nfs volumes reached over the network (as QEMU's userspace
    client does) and overlays that can be made to fail by name."""

    fail_overlay: str | None = None

    def source(self, volume: VolumeRef) -> DiskSource:
        if volume.pool.type == "nfs":
            return DiskSource(kind="network", format="qcow2", protocol="nfs", name=volume.name)
        return super().source(volume)

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        if new_name == self.fail_overlay:
            raise StorageError("no space left", volume_id=volume.volume_id)
        await super().create_overlay(volume, new_name, backing_name)


class FlakySpecStore(SpecStore):
    failing = False

    def put(self, stored: StoredSpec) -> None:
        if self.failing:
            raise StorageError("disk full")
        super().put(stored)


def ref(volume_id: str, name: str, pool: PoolRef = LOCAL) -> VolumeRef:
    return VolumeRef(volume_id=volume_id, pool=pool, name=name, size_gb=1)


def vm_spec() -> VmSpec:
    return VmSpec(vm_id=VM, name=VM, cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw")


def src(name: str) -> str:
    return f"sim://h1/volumes/{name}"


def snap(
    step: int = 1, *, memory: str | None = "m1", quiesce: bool = True, rbd: bool = True
) -> VmSnapshotTask:
    """Snapshot ``step``: each file disk from ``<vol>-<step-1>`` to ``<vol>-<step>``."""
    disks = [
        VmSnapshotDisk(volume=ref(v, f"{v}-{step - 1}"), new_name=f"{v}-{step}") for v in FILE_VOLS
    ]
    if rbd:
        disks.append(VmSnapshotDisk(volume=ref(RBD_VOL, RBD_VOL, RBD), ceph_snap=f"s{step}"))
    return VmSnapshotTask(vm_id=VM, disks=disks, quiesce=quiesce, memory=memory)


def frozen(step: int = 1) -> dict[str, int]:
    """``frozen_bytes`` of ``snap(step)``: each frozen file's and the Ceph snapshot's simulated
    size (``SimulatedBackend.allocated``, ``snap_allocated``)."""
    sizes = {v: sim_own_bytes(LOCAL.id, f"{v}-{step - 1}") for v in FILE_VOLS}
    return sizes | {RBD_VOL: sim_own_bytes(RBD.id, f"{RBD_VOL}@s{step}")}


class Kit:
    def __init__(self, tmp: Path) -> None:
        self.faults = FaultPlan()
        self.sim = SimulatorDriver(SimHost(name="h1"), faults=self.faults)
        self.backend = Backend(host_name="h1", faults=self.faults)
        self.specs = FlakySpecStore(tmp / "agent" / "vms")
        self.specs.open()
        self.memory_dir = tmp / "agent" / "memory"

        async def fetch(image: ImageRef, dest: Path) -> None:
            raise AssertionError("no image is fetched here")

        backends = {t: self.backend for t in ("local", "nfs", "rbd")}
        self.ex = TaskExecutor(
            compute=self.sim,
            volumes=FakeVolumes(tmp / "pool"),
            specs=self.specs,
            faults=self.faults,
            fetch=fetch,
            drift={},
            backends=Backends(backends),
        )

    async def run(self, payload: Payload) -> dict[str, object]:
        return await self.ex.run(payload)

    def active(self) -> dict[str, str]:
        """Each disk's file as the stored spec (re-read from disk) names it."""
        reread = SpecStore(self.specs.directory)
        reread.open()
        stored = reread.get(VM)
        assert stored is not None and stored == self.specs.get(VM)
        return {d.volume.volume_id: d.volume.name for d in stored.spec.disks}

    def sim_files(self) -> dict[str, str]:
        return {v: d.source.path for v, d in self.sim.vms[VM].disks.items()}

    def files(self) -> dict[str, str | None]:
        return dict(self.backend.files(LOCAL.id))

    def snaps(self) -> frozenset[str]:
        return self.backend.snapshots(RBD.id, RBD_VOL)

    def memory(self, name: str = "m1") -> Path:
        return self.memory_dir / f"{name}.mem"

    def state(self) -> PowerState:
        return self.sim.vms[VM].state

    async def power(self, kind: str) -> None:
        await self.run(VmPower(kind=kind, vm_id=VM, force=True))

    def assert_untouched(self, state: PowerState = PowerState.running) -> None:
        """Nothing of a failed snapshot is left and the VM runs on as before."""
        assert self.files() == {}
        assert self.snaps() == frozenset()
        assert not self.memory().exists()
        assert self.active() == {"vol-a": "vol-a-0", "vol-b": "vol-b-0", RBD_VOL: RBD_VOL}
        assert self.sim_files() == {
            "vol-a": src("vol-a-0"),
            "vol-b": src("vol-b-0"),
            RBD_VOL: src(RBD_VOL),
        }
        assert self.state() == state
        assert not self.sim.vms[VM].frozen


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    k = Kit(tmp_path)
    await k.sim.open(lambda event: None)
    await k.run(VmDefine(spec=vm_spec()))
    devices = iter(("vdb", "vdc", "vdd"))
    for volume in (ref("vol-a", "vol-a-0"), ref("vol-b", "vol-b-0"), ref(RBD_VOL, RBD_VOL, RBD)):
        disk = DataDisk(volume=volume, device=next(devices))
        await k.run(VolumeAttachTask(vm_id=VM, disk=disk))
    yield k
    await k.sim.close()


async def test_live_snapshot_with_memory_switches_every_disk_at_once(kit: Kit) -> None:
    await kit.power("vm.start")
    result = await kit.run(snap())
    assert result == {
        "quiesced": False,
        "memory_bytes": kit.memory().stat().st_size,
        "frozen_bytes": frozen(),
    }
    assert isinstance(result["memory_bytes"], int) and result["memory_bytes"] > 0
    assert kit.sim.calls["vm.snapshot_vm"] == 1 and kit.sim.calls["vm.snapshot_disk"] == 0
    assert kit.sim_files() == {
        "vol-a": src("vol-a-1"),
        "vol-b": src("vol-b-1"),
        RBD_VOL: src(RBD_VOL),
    }
    assert [s.path for s in kit.sim.vms[VM].disks["vol-a"].chain] == [src("vol-a-0")]
    assert kit.active() == {"vol-a": "vol-a-1", "vol-b": "vol-b-1", RBD_VOL: RBD_VOL}
    assert kit.files() == {"vol-a-1": "vol-a-0", "vol-b-1": "vol-b-0"}
    assert kit.snaps() == {"s1"}
    # Paused, then resumed: the VM runs on. Not frozen: the memory would keep it frozen.
    assert kit.sim.calls["vm.fs_freeze"] == 0 and kit.sim.calls["vm.fs_thaw"] == 0
    assert kit.sim.calls["vm.pause"] == 1 and kit.sim.calls["vm.resume"] == 1
    assert kit.state() == PowerState.running and not kit.sim.vms[VM].frozen
    assert stat.S_IMODE(kit.memory_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(kit.memory().stat().st_mode) == 0o600

    # Done already: success, nothing taken again.
    again = await kit.run(snap())
    assert again == {
        "quiesced": False,
        "memory_bytes": result["memory_bytes"],
        "frozen_bytes": frozen(),
    }
    assert kit.sim.calls["vm.snapshot_vm"] == 1 and kit.sim.calls["vm.pause"] == 1
    assert kit.snaps() == {"s1"}


async def test_disk_only_snapshot_is_quiesced(kit: Kit) -> None:
    await kit.power("vm.start")
    assert await kit.run(snap(memory=None)) == {
        "quiesced": True,
        "memory_bytes": None,
        "frozen_bytes": frozen(),
    }
    # Frozen, then paused, then resumed and thawed.
    assert kit.sim.calls["vm.fs_freeze"] == 1 and kit.sim.calls["vm.fs_thaw"] == 1
    assert kit.sim.calls["vm.pause"] == 1 and kit.sim.calls["vm.resume"] == 1
    assert kit.state() == PowerState.running and not kit.sim.vms[VM].frozen
    assert kit.active() == {"vol-a": "vol-a-1", "vol-b": "vol-b-1", RBD_VOL: RBD_VOL}
    assert kit.snaps() == {"s1"} and not kit.memory_dir.exists()


async def test_disk_only_snapshot_of_a_paused_vm_stays_paused(kit: Kit) -> None:
    await kit.power("vm.start")
    await kit.power("vm.pause")
    assert await kit.run(snap(memory=None)) == {
        "quiesced": False,
        "memory_bytes": None,
        "frozen_bytes": frozen(),
    }
    assert kit.sim.calls["vm.fs_freeze"] == 0  # the agent of a paused guest cannot answer
    assert kit.sim.calls["vm.resume"] == 0 and kit.state() == PowerState.paused
    assert kit.active()["vol-a"] == "vol-a-1" and not kit.memory_dir.exists()


async def test_a_silent_guest_agent_means_unquiesced(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.sim.guest_agent_answers(VM, False)
    assert await kit.run(snap(memory=None)) == {
        "quiesced": False,
        "memory_bytes": None,
        "frozen_bytes": frozen(),
    }
    assert kit.sim.calls["vm.fs_thaw"] == 1  # thawed all the same (its failure is logged)
    assert kit.active()["vol-b"] == "vol-b-1" and kit.state() == PowerState.running


async def test_a_failed_switch_removes_the_overlays_ceph_snapshots_and_memory(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.faults.fail_next("vm.snapshot_vm", DriverError("QEMU said no"))
    with pytest.raises(DriverError, match="QEMU said no"):
        await kit.run(snap())
    kit.assert_untouched()
    assert kit.sim.calls["vm.resume"] == 1
    assert kit.backend.calls["volume.delete_file"] == 2
    assert kit.backend.calls["volume.snap_remove"] == 1

    await kit.run(snap())  # a retry goes through
    assert kit.files() == {"vol-a-1": "vol-a-0", "vol-b-1": "vol-b-0"} and kit.snaps() == {"s1"}
    assert kit.memory().exists()


async def test_a_failed_quiesced_switch_thaws_and_resumes(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.faults.fail_next("vm.snapshot_vm", DriverError("QEMU said no"))
    with pytest.raises(DriverError, match="QEMU said no"):
        await kit.run(snap(memory=None))
    kit.assert_untouched()
    assert kit.sim.calls["vm.fs_freeze"] == 1 and kit.sim.calls["vm.fs_thaw"] == 1
    assert kit.sim.calls["vm.resume"] == 1


async def test_a_failed_ceph_snapshot_removes_the_overlays_and_resumes(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.faults.fail_next("volume.snap_create", StorageError("ceph is down"))
    with pytest.raises(StorageError, match="ceph is down"):
        await kit.run(snap())
    kit.assert_untouched()
    assert kit.sim.calls["vm.snapshot_vm"] == 0 and kit.sim.calls["vm.resume"] == 1


async def test_a_failed_overlay_deletes_the_others_before_the_vm_is_touched(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.backend.fail_overlay = "vol-b-1"
    with pytest.raises(StorageError, match="no space"):
        await kit.run(snap())
    kit.assert_untouched()
    assert kit.backend.calls["volume.delete_file"] == 1  # vol-a-1, made first
    assert kit.sim.calls["vm.pause"] == 0 and kit.sim.calls["vm.fs_freeze"] == 0
    assert kit.backend.calls["volume.snap_create"] == 0


async def test_a_failed_pause_leaves_nothing_and_thaws(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.faults.fail_next("vm.pause")
    with pytest.raises(InjectedFault):
        await kit.run(snap(memory=None))
    kit.assert_untouched()
    assert kit.sim.calls["vm.fs_thaw"] == 1


async def test_a_spec_write_failing_after_the_switch_is_finished_by_a_retry(kit: Kit) -> None:
    await kit.power("vm.start")
    kit.specs.failing = True
    with pytest.raises(StorageError, match="disk full"):
        await kit.run(snap())
    kit.specs.failing = False
    # The VM switched and runs on the overlays: they, the Ceph snapshot and the memory stay.
    assert kit.sim_files()["vol-a"] == src("vol-a-1") and kit.state() == PowerState.running
    assert kit.files() == {"vol-a-1": "vol-a-0", "vol-b-1": "vol-b-0"}
    assert kit.snaps() == {"s1"} and kit.memory().exists()
    assert kit.active()["vol-a"] == "vol-a-0"

    result = await kit.run(snap())
    assert result == {
        "quiesced": False,
        "memory_bytes": kit.memory().stat().st_size,
        "frozen_bytes": frozen(),
    }
    assert kit.active() == {"vol-a": "vol-a-1", "vol-b": "vol-b-1", RBD_VOL: RBD_VOL}
    assert kit.sim.calls["vm.snapshot_vm"] == 1 and kit.sim.calls["vm.pause"] == 1


async def test_snapshot_of_a_stopped_vm_redefines_it(kit: Kit) -> None:
    with pytest.raises(InvalidInput, match="no memory state"):
        await kit.run(snap())
    assert kit.files() == {}
    defines = kit.sim.calls["vm.define"]
    for _ in range(2):  # done already is success
        assert await kit.run(snap(memory=None)) == {
            "quiesced": False,
            "memory_bytes": None,
            "frozen_bytes": frozen(),
        }
    assert kit.sim.calls["vm.define"] == defines + 1
    assert kit.sim.calls["vm.snapshot_vm"] == 0 and kit.sim.calls["vm.pause"] == 0
    assert kit.active() == {"vol-a": "vol-a-1", "vol-b": "vol-b-1", RBD_VOL: RBD_VOL}
    assert kit.sim_files()["vol-b"] == src("vol-b-1") and kit.snaps() == {"s1"}
    await kit.power("vm.start")  # boots on the overlays
    assert kit.sim_files()["vol-a"] == src("vol-a-1")


async def test_a_failed_offline_redefinition_leaves_nothing(kit: Kit) -> None:
    kit.faults.fail_next("vm.define")
    with pytest.raises(InjectedFault):
        await kit.run(snap(memory=None))
    kit.assert_untouched(PowerState.stopped)

    kit.specs.failing = True  # the driver switched, the spec write fails: define undoes it
    with pytest.raises(StorageError):
        await kit.run(snap(memory=None))
    kit.specs.failing = False
    kit.assert_untouched(PowerState.stopped)


async def test_refusals_change_nothing(kit: Kit) -> None:
    await kit.power("vm.start")
    wrong = snap(2)  # the server thinks the disks are on <vol>-1
    with pytest.raises(InvalidState, match="active file") as err:
        await kit.run(wrong)
    assert err.value.context["active"] == "vol-a-0"
    twice = snap().model_copy(update={"disks": [*snap().disks, snap().disks[0]]})
    with pytest.raises(InvalidInput, match="twice"):
        await kit.run(twice)
    same = VmSnapshotTask(
        vm_id=VM, disks=[VmSnapshotDisk(volume=ref("vol-a", "vol-a-0"), new_name="vol-a-0")]
    )
    with pytest.raises(InvalidInput, match="differently"):
        await kit.run(same)
    stranger = VmSnapshotTask(
        vm_id=VM, disks=[VmSnapshotDisk(volume=ref("vol-x", "x0"), new_name="x1")]
    )
    with pytest.raises(NotFound, match="not attached"):
        await kit.run(stranger)
    with pytest.raises(NotFound, match="not defined"):
        await kit.run(snap().model_copy(update={"vm_id": "vm-9"}))
    kit.assert_untouched()
    assert sum(kit.backend.calls.values()) == 0


async def test_live_snapshots_of_nfs_volumes_are_refused(kit: Kit) -> None:
    disk = DataDisk(volume=ref("vol-n", "n0", NFS), device="vde")
    await kit.run(VolumeAttachTask(vm_id=VM, disk=disk))
    task = VmSnapshotTask(
        vm_id=VM,
        disks=[
            *snap().disks,
            VmSnapshotDisk(volume=ref("vol-n", "n0", NFS), new_name="n1"),
        ],
    )
    await kit.power("vm.start")
    with pytest.raises(InvalidState, match="stop the VM first") as err:
        await kit.run(task)
    assert err.value.context["pool_type"] == "nfs"
    assert sum(kit.backend.calls.values()) == 0 and kit.sim.calls["vm.pause"] == 0
    await kit.power("vm.stop")
    await kit.run(task.model_copy(update={"memory": None}))  # offline it is fine
    assert kit.active()["vol-n"] == "n1"


async def test_memory_restore_and_delete(kit: Kit) -> None:
    await kit.power("vm.start")
    await kit.run(snap())
    restore = VmMemoryTask(op="restore", vm_id=VM, name="m1")
    assert await kit.run(restore) == {}  # running already
    assert kit.sim.restores == {}
    await kit.power("vm.stop")
    assert await kit.run(restore) == {}
    assert kit.state() == PowerState.running and kit.sim.restores == {VM: 1}
    await kit.power("vm.pause")
    with pytest.raises(InvalidState, match="paused"):
        await kit.run(restore)
    await kit.power("vm.stop")

    with pytest.raises(NotFound, match="memory state m2"):
        await kit.run(VmMemoryTask(op="restore", vm_id=VM, name="m2"))
    with pytest.raises(NotFound, match="not defined"):
        await kit.run(VmMemoryTask(op="restore", vm_id="vm-9", name="m1"))
    for _ in range(2):  # absent is success
        assert await kit.run(VmMemoryTask(op="delete", vm_id=VM, name="m1")) == {}
    assert not kit.memory().exists()
    with pytest.raises(NotFound, match="memory state m1"):
        await kit.run(restore)


async def test_a_memory_only_snapshot_of_rbd_disks(kit: Kit) -> None:
    await kit.power("vm.start")
    task = VmSnapshotTask(
        vm_id=VM,
        disks=[VmSnapshotDisk(volume=ref(RBD_VOL, RBD_VOL, RBD), ceph_snap="only")],
        memory="m1",
        quiesce=False,
    )
    result = await kit.run(task)
    assert result["memory_bytes"] == kit.memory().stat().st_size and kit.snaps() == {"only"}
    assert kit.sim.calls["vm.snapshot_vm"] == 1 and kit.active()["vol-a"] == "vol-a-0"


async def test_keys() -> None:
    assert payload_key(snap()) == VM
    assert payload_key(VmMemoryTask(op="delete", vm_id=VM, name="m1")) == VM


async def test_runtime_runs_vm_snapshot_tasks(tmp_path: Path) -> None:
    sim = SimulatorDriver(SimHost(name="h1"))
    backend = SimulatedBackend(host_name="h1")
    data_dir = tmp_path / "agent"
    rt = HostRuntime(
        name="t",
        data_dir=data_dir,
        compute=sim,
        volumes=FakeVolumes(tmp_path / "pool"),
        backends=Backends({"local": backend}),
        inline_wait=5,
    )
    await rt.start()
    try:
        disk = DataDisk(volume=ref("vol-a", "vol-a-0"), device="vdb")
        task = VmSnapshotTask(
            vm_id=VM,
            disks=[VmSnapshotDisk(volume=ref("vol-a", "vol-a-0"), new_name="vol-a-1")],
            memory="m1",
        )
        payloads = [
            {"kind": "vm.define", "spec": vm_spec().model_dump()},
            {"kind": "volume.attach", "vm_id": VM, "disk": disk.model_dump()},
            {"kind": "vm.start", "vm_id": VM},
            task.model_dump(),
            {"kind": "vm.stop", "vm_id": VM, "force": True},
            {"kind": "vm.memory", "op": "restore", "vm_id": VM, "name": "m1"},
        ]
        results = []
        for i, payload in enumerate(payloads):
            status = await rt.submit(
                AgentTask.model_validate({"task_id": f"t{i}", "payload": payload})
            )
            assert status.state == TaskState.succeeded, status.error
            results.append(status.result)
        assert results[3]["quiesced"] is False and results[5] == {}
        assert results[3]["memory_bytes"] == (data_dir / "memory" / "m1.mem").stat().st_size
        assert (data_dir / "memory" / "m1.mem").is_file()
        assert sim.vms[VM].state == PowerState.running and sim.restores == {VM: 1}
    finally:
        await rt.stop()


def test_libvirt_snapshot_xml_marks_every_other_disk() -> None:
    xml = snapshot_xml(["vda", "vdb", "vdc", "hdc"], {"vdb": "/p/b1"}, "/data/memory/m.mem")
    assert xml == (
        '<domainsnapshot><memory snapshot="external" file="/data/memory/m.mem" />'
        '<disks><disk name="vda" snapshot="no" />'
        '<disk name="vdb" snapshot="external" type="file"><driver type="qcow2" />'
        '<source file="/p/b1" /></disk>'
        '<disk name="vdc" snapshot="no" /><disk name="hdc" snapshot="no" /></disks>'
        "</domainsnapshot>"
    )
    assert "<memory" not in snapshot_xml(["vda"], {}, None)


SAVED = """<domain type='qemu'><name>corral-vm-1</name><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/r/root'/>
<target dev='vda' bus='virtio'/><address type='pci' slot='0x04'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/p/a1'/>
<backingStore type='file'><format type='qcow2'/><source file='/p/a0'/></backingStore>
<target dev='vdb' bus='virtio'/><alias name='ua-vol-a'/><address type='pci' slot='0x07'/></disk>
<disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='hdc' bus='ide'/>
<readonly/><alias name='ua-cdrom'/></disk>
</devices></domain>"""


def current(*extra: str) -> str:
    return (
        "<domain type='qemu'><name>corral-vm-1</name><devices>"
        "<disk type='file' device='disk'><source file='/r/root'/><target dev='vda'/></disk>"
        "<disk type='file' device='disk'><source file='/p/a2'/><target dev='vdb'/>"
        "<alias name='ua-vol-a'/><address type='pci' slot='0x05'/></disk>"
        "<disk type='file' device='cdrom'><target dev='hdc'/><alias name='ua-cdrom'/></disk>"
        + "".join(extra)
        + "</devices></domain>"
    )


def test_restore_xml_keeps_the_saved_devices_with_the_current_files() -> None:
    root = ET.fromstring(with_current_disks(SAVED, current(), vm_id=VM))
    disks = {d.find("target").get("dev"): d for d in root.iterfind("devices/disk")}  # type: ignore[union-attr]
    vdb = disks["vdb"]
    assert vdb.find("source").get("file") == "/p/a2"  # type: ignore[union-attr]
    assert vdb.find("backingStore") is None
    saved_slot = vdb.find("address").get("slot")  # type: ignore[union-attr]
    assert saved_slot == "0x07"  # the saved ABI, not the current definition's
    assert disks["vda"].find("source").get("file") == "/r/root"  # type: ignore[union-attr]
    assert disks["hdc"].find("source") is None  # ejected since
    assert disks["hdc"].find("readonly") is not None


def test_restore_xml_refuses_changed_disk_sets() -> None:
    extra = (
        "<disk type='file'><source file='/p/n'/><target dev='vdc'/><alias name='ua-vol-n'/></disk>"
    )
    with pytest.raises(InvalidState, match="detach them first") as err:
        with_current_disks(SAVED, current(extra), vm_id=VM)
    assert err.value.context["devices"] == ["vdc"]
    gone = current().replace("<target dev='vdb'/>", "<target dev='vdz'/>")
    with pytest.raises(InvalidState, match="no longer has the disk vdb"):
        with_current_disks(SAVED, gone, vm_id=VM)
