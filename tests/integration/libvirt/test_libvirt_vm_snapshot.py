"""Whole-VM snapshots on a real TCG guest (``$CORRAL_TEST_IMAGE``) with two data volumes on a
LocalBackend, through the agent's tasks with LibvirtDriver: a snapshot that libvirt refuses
(nothing left, the guest runs on), a snapshot with the memory state
(both disks switched in the live definition, the memory file written), markers written after it,
the VM powered off, both volumes reverted offline (``snapshot.revert``) and the VM restored from
the memory (``vm.memory restore``): the guest continues from that instant (a value it kept in RAM,
the disks' markers as they were). Then a quiesced disk-only snapshot of the running guest, one
with a hung guest agent (unquiesced after a few seconds), a snapshot of the stopped VM, and the
memory file deleted."""

from __future__ import annotations

import asyncio
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.volumes import Backends
from corral.agent.vm_snapshots import QUIESCE_TIMEOUT_S
from corral.api.agent import (
    DataDisk,
    PoolRef,
    SnapshotRevertTask,
    VmDefine,
    VmMemoryTask,
    VmPower,
    VmSnapshotDisk,
    VmSnapshotTask,
    VolumeAttachTask,
    VolumeCreateTask,
    VolumeRef,
)
from corral.api.errors import DriverError, InvalidInput
from corral.api.vms import PowerState
from tests.integration.libvirt.libvirt_itest import qcow2, wait_for_log
from tests.integration.libvirt.test_libvirt_snapshots import disk_source, image_info
from tests.integration.libvirt.test_libvirt_volumes import Guest, spec, xml_of
from tests.unit.agent.fakes import FakeVolumes

pytestmark = pytest.mark.libvirt

DEVICES = {"a": "vdb", "b": "vdc"}
"""Each volume's device, in the definition and (attached in this order) in the guest."""


def plain(result: dict[str, Any]) -> dict[str, Any]:
    """A ``vm.snapshot`` result without its measured sizes (``frozen_bytes``: an int or None
    per volume)."""
    frozen = result.get("frozen_bytes") or {}
    assert all(v is None or isinstance(v, int) for v in frozen.values()), frozen
    return {k: v for k, v in result.items() if k != "frozen_bytes"}


async def test_vm_snapshot_with_memory_revert_and_restore(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    test_image: Path,
    system_conn: Any,
) -> None:
    started = time.monotonic()
    vm = new_vm_id()
    specs = SpecStore(workdir / "vms")
    specs.open()
    root_disks = FakeVolumes(workdir)
    qcow2(Path(root_disks.disk_path(vm)), backing=test_image)
    pool_dir = workdir / "pool" / "volumes"
    pool = PoolRef(id="local-1", type="local", settings={"path": str(workdir / "pool")})
    memory_file = workdir / "memory" / "m1.mem"  # <data>/memory, next to <data>/vms

    async def fetch(*_: object) -> None:
        raise AssertionError("no image is fetched here")

    ex = TaskExecutor(
        compute=driver,
        volumes=root_disks,
        specs=specs,
        faults=FaultPlan(),
        fetch=fetch,
        drift={},
        backends=Backends({"local": LocalBackend()}),
    )
    ids = {v: uuid.uuid4().hex for v in DEVICES}

    def ref(v: str, step: int) -> VolumeRef:
        return VolumeRef(volume_id=ids[v], pool=pool, name=f"{v}{step}", size_gb=1)

    def snap(step: int, **kw: Any) -> VmSnapshotTask:
        """Every disk from ``<v><step-1>`` to ``<v><step>``."""
        disks = [VmSnapshotDisk(volume=ref(v, step - 1), new_name=f"{v}{step}") for v in DEVICES]
        return VmSnapshotTask(vm_id=vm, disks=disks, **kw)

    def active() -> dict[str, str]:
        stored = specs.get(vm)
        assert stored is not None
        return {
            v: d.volume.name
            for v in DEVICES
            for d in stored.spec.disks
            if d.volume.volume_id == ids[v]
        }

    def on(step: int, *, live: bool) -> None:
        """Both disks of the live (or persistent) definition are on their ``step`` files."""
        root = xml_of(system_conn, vm, live=live)
        for v in DEVICES:
            assert disk_source(root, ids[v])[0] == str(pool_dir / f"{v}{step}")

    await ex.run(VmDefine(spec=spec(vm, memory_mb=256)))
    for v, device in DEVICES.items():
        await ex.run(VolumeCreateTask(volume=ref(v, 0)))
        await ex.run(VolumeAttachTask(vm_id=vm, disk=DataDisk(volume=ref(v, 0), device=device)))
    console = driver.console_dir / f"{vm}.log"
    await ex.run(VmPower(kind="vm.start", vm_id=vm))
    await wait_for_log(console, timeout=90)
    dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}")
    guest = Guest(dom)
    await asyncio.to_thread(guest.wait_for_agent)
    booted = time.monotonic()

    async def sh(script: str) -> str:
        return await asyncio.to_thread(guest.sh, script)

    async def write(marker: str) -> None:
        """``marker`` at the start of both disks, and in RAM (tmpfs /run): nothing goes to the
        root disk, which the snapshots leave alone."""
        script = f"echo {marker} > /run/state"
        for v, device in DEVICES.items():
            script += (
                f" && echo {marker}-{v} > /run/m && dd if=/run/m of=/dev/{device} bs=512"
                " count=1 conv=sync,notrunc,fsync 2>/dev/null"
            )
        await sh(script)

    async def read() -> list[str]:
        """What /run/state and both disks (past the page cache) hold."""
        script = "echo 3 > /proc/sys/vm/drop_caches; cat /run/state"
        for device in DEVICES.values():
            script += f"; dd if=/dev/{device} bs=512 count=1 2>/dev/null | tr -d '\\000'"
        return (await sh(script)).split("\n")

    # 1. Markers A. A snapshot failing in libvirt (b1 is no qcow2 image) leaves nothing and the
    # guest runs on; then the snapshot with the memory: both disks switch at one instant.
    await write("MARK-A")
    pool_dir.joinpath("b1").write_bytes(b"")
    with pytest.raises(DriverError, match="not in qcow2 format"):
        await ex.run(snap(1, memory="m1"))
    assert sorted(p.name for p in pool_dir.iterdir()) == ["a0", "b0"]
    assert not memory_file.exists()
    on(0, live=True)
    assert active() == {"a": "a0", "b": "b0"}
    assert await driver.power_state(vm) == PowerState.running
    assert await read() == ["MARK-A", "MARK-A-a", "MARK-A-b"]
    for _ in range(2):  # done already is success
        result = await ex.run(snap(1, memory="m1"))
        size = memory_file.stat().st_size
        assert (result["quiesced"], result["memory_bytes"]) == (False, size) and size > 1 << 20
    assert stat.S_IMODE(memory_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(memory_file.parent.stat().st_mode) == 0o700
    on(1, live=True)
    on(1, live=False)
    assert active() == {"a": "a1", "b": "b1"}
    assert await driver.power_state(vm) == PowerState.running
    snapshot_at = time.monotonic()

    # 2. Markers B, power off, both volumes back to the snapshot (new files on a0 and b0).
    await write("MARK-B")
    assert await read() == ["MARK-B", "MARK-B-a", "MARK-B-b"]
    await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
    with pytest.raises(InvalidInput, match="no memory state"):
        await ex.run(snap(2, memory="m2"))
    for v in DEVICES:
        await ex.run(
            SnapshotRevertTask(volume=ref(v, 1), target=f"{v}0", new_name=f"{v}2", vm_id=vm)
        )
        assert image_info(pool_dir / f"{v}2")["backing-filename"] == f"{v}0"
    on(2, live=False)

    # 3. Restore from the memory: the guest goes on from the snapshot, on the reverted disks.
    restore = VmMemoryTask(op="restore", vm_id=vm, name="m1")
    for _ in range(2):  # running already is success
        assert await ex.run(restore) == {}
    assert await driver.power_state(vm) == PowerState.running
    on(2, live=True)
    await asyncio.to_thread(guest.wait_for_agent, 20)
    assert await read() == ["MARK-A", "MARK-A-a", "MARK-A-b"]
    assert "GUEST-READY" not in console.read_text(errors="replace")  # no boot
    restored_at = time.monotonic()

    # 4. A quiesced disk-only snapshot of the running guest, then writes go on.
    result = await ex.run(snap(3, quiesce=True))
    assert plain(result) == {"quiesced": True, "memory_bytes": None}
    on(3, live=True)
    on(3, live=False)
    await write("MARK-C")
    assert await read() == ["MARK-C", "MARK-C-a", "MARK-C-b"]
    # The driver saves the memory alone too (a VM whose listed disks are all rbd): every disk
    # of the domain is left alone, and a running VM runs on.
    memory_only = memory_file.with_name("m2.mem")
    await driver.snapshot_vm(vm, {}, memory_only)
    assert memory_only.stat().st_size > 1 << 20
    assert await driver.power_state(vm) == PowerState.running
    on(3, live=True)

    # 5. The guest agent hangs (SIGSTOP): the snapshot goes on unquiesced after a few seconds.
    stop_agent = "sleep 0.5; kill -STOP $(pidof qemu-ga)"  # once guest-exec has answered
    command = {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", stop_agent]}}
    await asyncio.to_thread(guest._call, command)
    await asyncio.sleep(1.5)
    hung_at = time.monotonic()
    assert plain(await ex.run(snap(4, quiesce=True))) == {"quiesced": False, "memory_bytes": None}
    hung_for = time.monotonic() - hung_at
    assert hung_for < 4 * QUIESCE_TIMEOUT_S
    on(4, live=True)
    assert await driver.power_state(vm) == PowerState.running

    # 6. A snapshot of the stopped VM: redefined on the new files.
    await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
    assert plain(await ex.run(snap(5))) == {"quiesced": False, "memory_bytes": None}
    on(5, live=False)
    assert active() == {"a": "a5", "b": "b5"}
    assert image_info(pool_dir / "a5")["backing-filename"] == "a4"

    for _ in range(2):
        assert await ex.run(VmMemoryTask(op="delete", vm_id=vm, name="m1")) == {}
    assert not memory_file.exists()
    ended = time.monotonic()
    print(
        f"\nvm snapshot test: {ended - started:.1f} s in all; boot {booted - started:.1f} s,"
        f" snapshot with memory {snapshot_at - booted:.1f} s,"
        f" stop + revert + restore + read {restored_at - snapshot_at:.1f} s,"
        f" quiesced + unquiesced + offline snapshots {ended - restored_at:.1f} s"
        f" (with a hung guest agent {hung_for:.1f} s)"
    )
