"""External qcow2 snapshots of a data volume on a real TCG guest (``$CORRAL_TEST_IMAGE``), through
the agent's snapshot tasks with LibvirtDriver and LocalBackend: two live snapshots (one quiesced
through the guest agent), delete-by-merge of the first while the guest runs (live block pull of
the active file, offline rebase of the other child, delete of the file), then a revert of the
stopped VM to the second snapshot, read back inside the guest after a new boot; a pull onto a file
that stays and an offline snapshot of the stopped VM."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    DataDisk,
    PoolRef,
    SnapshotCreateTask,
    SnapshotDeleteFileTask,
    SnapshotRebaseTask,
    SnapshotRevertTask,
    VmDefine,
    VmPower,
    VolumeAttachTask,
    VolumeCreateTask,
    VolumeRef,
)
from corral.api.errors import InvalidState, StorageError
from tests.integration.libvirt.libvirt_itest import qcow2, wait_for_log
from tests.integration.libvirt.test_libvirt_volumes import Guest, disk_with_alias, spec, xml_of
from tests.unit.agent.fakes import FakeVolumes

pytestmark = pytest.mark.libvirt

MIB_SECTORS = 2048
"""512-byte sectors in 1 MiB: marker B lives at 1 MiB, A and C at 0."""
MIB = 1 << 20


def image_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def disk_source(root: ET.Element, volume_id: str) -> tuple[str | None, list[str]]:
    """The data disk's file and the backing files libvirt lists for it."""
    disk = disk_with_alias(root, volume_id)
    assert disk is not None
    source = disk.find("source")
    chain = [s.get("file", "") for s in disk.iterfind(".//backingStore/source") if s.get("file")]
    return (source.get("file") if source is not None else None), chain


async def test_live_snapshots_merge_and_revert_on_a_running_guest(
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
    volume_id = uuid.uuid4().hex

    def ref(name: str) -> VolumeRef:
        return VolumeRef(volume_id=volume_id, pool=pool, name=name, size_gb=1)

    def active() -> str:
        stored = specs.get(vm)
        assert stored is not None
        return stored.spec.disks[0].volume.name

    def files() -> list[str]:
        return sorted(p.name for p in pool_dir.iterdir())

    await ex.run(VolumeCreateTask(volume=ref("a0")))
    await ex.run(VmDefine(spec=spec(vm, memory_mb=256)))
    await ex.run(VolumeAttachTask(vm_id=vm, disk=DataDisk(volume=ref("a0"), device="vdb")))
    console = driver.console_dir / f"{vm}.log"

    async def boot() -> Guest:
        await ex.run(VmPower(kind="vm.start", vm_id=vm))
        await wait_for_log(console, timeout=90)  # the log starts anew at each boot
        dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}")
        guest = Guest(dom)
        await asyncio.to_thread(guest.wait_for_agent)
        return guest

    guest = await boot()
    booted = time.monotonic()

    async def sh(script: str) -> str:
        return await asyncio.to_thread(guest.sh, script)

    async def write(marker: str, sector: int) -> None:
        await sh(
            f"echo {marker} > /tmp/m && dd if=/tmp/m of=/dev/vdb bs=512 count=1 seek={sector}"
            " conv=sync,notrunc,fsync 2>/dev/null && sync"
        )

    async def read(sector: int) -> str:
        return await sh(
            "echo 3 > /proc/sys/vm/drop_caches;"
            f" dd if=/dev/vdb bs=512 count=1 skip={sector} 2>/dev/null | tr -d '\\000'"
        )

    # 1. A at 0, snapshot 1 (live): the guest continues on a1, a0 is frozen with A.
    assert await sh("[ -b /dev/vdb ] && echo yes") == "yes"
    await write("MARK-A", 0)
    for _ in range(2):  # done already is success
        result = await ex.run(SnapshotCreateTask(volume=ref("a0"), new_name="a1", vm_id=vm))
        assert result["live"] is True and set(result) == {"live", "frozen_bytes"}
        assert isinstance(result["frozen_bytes"], int) and result["frozen_bytes"] > 0
    assert active() == "a1"
    assert image_info(pool_dir / "a1")["backing-filename"] == "a0"  # relative, ours
    assert disk_source(xml_of(system_conn, vm, live=True), volume_id) == (
        str(pool_dir / "a1"),
        [str(pool_dir / "a0")],
    )
    # The persistent definition follows, without an explicit chain (read from the images).
    assert disk_source(xml_of(system_conn, vm, live=False), volume_id) == (
        str(pool_dir / "a1"),
        [],
    )

    dom = system_conn.lookupByName(f"corral-{vm}")
    secure = ET.fromstring(
        dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    )
    graphics = secure.find("devices/graphics")
    assert graphics is not None and graphics.get("passwd") == "pw"  # kept by the redefinition

    # 2. B at 1 MiB and 4 MiB of random data at 8 MiB, snapshot 2, quiesced through the guest
    # agent: the frozen a1 takes at least those 4 MiB (and not much more); then C over A.
    await write("MARK-B", MIB_SECTORS)
    await sh(
        "dd if=/dev/urandom of=/dev/vdb bs=1048576 count=4 seek=8 conv=notrunc,fsync"
        " 2>/dev/null && sync"
    )
    task = SnapshotCreateTask(volume=ref("a1"), new_name="a2", vm_id=vm, quiesce=True)
    result = await ex.run(task)
    assert result["live"] is True
    frozen = result["frozen_bytes"]
    assert isinstance(frozen, int) and 4 * MIB <= frozen < 64 * MIB, frozen
    await write("MARK-C", 0)
    assert (await read(0), await read(MIB_SECTORS)) == ("MARK-C", "MARK-B")
    assert disk_source(xml_of(system_conn, vm, live=True), volume_id)[1] == [
        str(pool_dir / "a1"),
        str(pool_dir / "a0"),
    ]
    snapshots_at = time.monotonic()

    # 3. Delete snapshot 1 (a0) while the guest runs. Its child a1 is under the active file:
    # pull the active file onto a0's backing (none: a0 is the blank volume's first file) ...
    with pytest.raises(InvalidState, match="rebase it live"):  # a2 is the running disk
        await ex.run(SnapshotRebaseTask(volume=ref("a2"), name="a2", backing=None))
    with pytest.raises(StorageError, match="lock"):  # QEMU has a1 open: it is under a2
        await ex.run(SnapshotRebaseTask(volume=ref("a1"), name="a1", backing=None))
    assert image_info(pool_dir / "a1")["backing-filename"] == "a0"
    pull = SnapshotRebaseTask(volume=ref("a2"), name="a2", backing=None, vm_id=vm, live=True)
    for _ in range(2):  # pulled already is success
        pulled = await ex.run(pull)
        assert pulled["live"] is True and isinstance(pulled["bytes"], int)
    assert disk_source(xml_of(system_conn, vm, live=True), volume_id) == (
        str(pool_dir / "a2"),
        [],
    )
    assert "backing-filename" not in image_info(pool_dir / "a2")
    assert disk_source(xml_of(system_conn, vm, live=False), volume_id) == (
        str(pool_dir / "a2"),
        [],
    )
    # ... then rebase a0's other child offline (QEMU no longer has a1 open) and drop a0; a1's
    # new size (the node's, after the merge) still holds its 4 MiB.
    rebased = await ex.run(SnapshotRebaseTask(volume=ref("a1"), name="a1", backing=None, vm_id=vm))
    assert rebased["live"] is False
    assert isinstance(rebased["bytes"], int) and 4 * MIB <= rebased["bytes"] < 64 * MIB
    assert "backing-filename" not in image_info(pool_dir / "a1")
    await ex.run(SnapshotDeleteFileTask(volume=ref("a0"), name="a0"))
    assert files() == ["a1", "a2"]
    assert (await read(0), await read(MIB_SECTORS)) == ("MARK-C", "MARK-B")
    merged_at = time.monotonic()

    # 4. Stop, revert to snapshot 2 (a1: A and B), boot, read A back.
    revert = SnapshotRevertTask(volume=ref("a2"), target="a1", new_name="a3", vm_id=vm)
    with pytest.raises(InvalidState, match="stop it"):
        await ex.run(revert)
    await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
    for _ in range(2):
        assert await ex.run(revert) == {}
    assert files() == ["a1", "a3"] and active() == "a3"
    assert image_info(pool_dir / "a3")["backing-filename"] == "a1"
    assert disk_source(xml_of(system_conn, vm, live=False), volume_id) == (
        str(pool_dir / "a3"),
        [],
    )
    guest = await boot()
    assert (await read(0), await read(MIB_SECTORS)) == ("MARK-A", "MARK-B")
    live_source = disk_source(xml_of(system_conn, vm, live=True), volume_id)
    assert live_source == (str(pool_dir / "a3"), [str(pool_dir / "a1")])

    # 5. A pull onto a file that stays (a4 -> a3 -> a1 becomes a4 -> a1; libvirt writes the
    # absolute path, which the backend reads back as the name), then an offline snapshot.
    await ex.run(SnapshotCreateTask(volume=ref("a3"), new_name="a4", vm_id=vm))
    pull = SnapshotRebaseTask(volume=ref("a4"), name="a4", backing="a1", vm_id=vm, live=True)
    await ex.run(pull)
    assert disk_source(xml_of(system_conn, vm, live=True), volume_id) == (
        str(pool_dir / "a4"),
        [str(pool_dir / "a1")],
    )
    assert await LocalBackend().backing_of(ref("a4"), "a4") == "a1"
    await ex.run(SnapshotDeleteFileTask(volume=ref("a3"), name="a3"))
    assert (await read(0), await read(MIB_SECTORS)) == ("MARK-A", "MARK-B")
    await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
    task = SnapshotCreateTask(volume=ref("a4"), new_name="a5", vm_id=vm)
    result = await ex.run(task)
    assert result["live"] is False and isinstance(result["frozen_bytes"], int)
    assert files() == ["a1", "a4", "a5"] and active() == "a5"
    assert disk_source(xml_of(system_conn, vm, live=False), volume_id) == (
        str(pool_dir / "a5"),
        [],
    )
    ended = time.monotonic()
    print(
        f"\nsnapshot test: {ended - started:.1f} s in all; boot {booted - started:.1f} s,"
        f" two live snapshots {snapshots_at - booted:.1f} s, merge {merged_at - snapshots_at:.1f} s,"
        f" stop + revert + boot + read + pull + offline snapshot {ended - merged_at:.1f} s"
    )
