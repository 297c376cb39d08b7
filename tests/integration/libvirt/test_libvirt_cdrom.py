"""The CD-ROM drive on a real TCG guest (``$CORRAL_TEST_IMAGE``) through the agent's executor:
an ISO is cached by the directory pool (checksum checked), inserted live, read inside the guest,
ejected; the boot order lands in the definition."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
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
from corral.agent.storage.dirpool import DirPool
from corral.api.agent import ImageRef, VmCdrom, VmDefine, VmPower, VmSpec
from corral.api.errors import InvalidInput
from tests.integration.libvirt.libvirt_itest import qcow2, wait_for_log
from tests.integration.libvirt.test_libvirt_volumes import Guest, until
from tests.support.iso import make_iso

pytestmark = pytest.mark.libvirt

TEXT = b"hello from the corral cdrom\n"


def iso_ref(data: bytes) -> ImageRef:
    return ImageRef(
        id=f"iso-{uuid.uuid4().hex[:8]}",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        virtual_size_bytes=len(data),
        format="iso",
        download_path="/unused",
    )


def cdrom_of(conn: Any, vm_id: str, *, live: bool) -> tuple[str | None, list[str]]:
    """(the medium's file or None, the boot order) of the live or persistent definition."""
    dom = conn.lookupByName(f"corral-{vm_id}")
    root = ET.fromstring(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))
    drive = root.find("devices/disk[@device='cdrom']")
    assert drive is not None, "every VM has a CD-ROM drive"
    source = drive.find("source")
    boot = [b.get("dev", "") for b in root.iterfind("os/boot")]
    return (source.get("file") if source is not None else None), boot


async def test_insert_read_eject_and_boot_order_on_a_running_guest(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    test_image: Path,
    system_conn: Any,
) -> None:
    vm = new_vm_id()
    data = make_iso({"HELLO.TXT": TEXT}, volume_id="CORRALTEST")
    image = iso_ref(data)
    fetched: list[str] = []

    async def fetch(ref: ImageRef, dest: Path) -> None:
        fetched.append(ref.id)
        await asyncio.to_thread(dest.write_bytes, data)

    pool = DirPool(workdir / "pool")
    await pool.prepare()
    root_disk = Path(pool.disk_path(vm))
    root_disk.parent.mkdir(mode=0o755)
    qcow2(root_disk, backing=test_image)
    specs = SpecStore(workdir / "vms")
    specs.open()
    ex = TaskExecutor(
        compute=driver, volumes=pool, specs=specs, faults=FaultPlan(), fetch=fetch, drift={}
    )
    spec = VmSpec(vm_id=vm, name=vm, cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw")

    # Defined with an empty drive; libvirt accepts it and QEMU starts with it.
    await ex.run(VmDefine(spec=spec))
    assert await asyncio.to_thread(cdrom_of, system_conn, vm, live=False) == (None, ["hd"])
    await ex.run(VmPower(kind="vm.start", vm_id=vm))
    await wait_for_log(driver.console_dir / f"{vm}.log", timeout=90)
    guest = Guest(await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}"))
    await asyncio.to_thread(guest.wait_for_agent)

    async def sh(script: str) -> str:
        return await asyncio.to_thread(guest.sh, script)

    # Insert live: the ISO is fetched once into the pool's image cache, checked, 0644.
    result = await ex.run(VmCdrom(vm_id=vm, image=image))
    cached = pool.images_dir / f"{image.id}.iso"
    assert result == {"cdrom": str(cached)} and cached.read_bytes() == data
    assert oct(cached.stat().st_mode & 0o777) == "0o644"
    assert await ex.run(VmCdrom(vm_id=vm, image=image)) == {"cdrom": str(cached)}  # idempotent
    assert fetched == [image.id]
    for live in (True, False):
        assert await asyncio.to_thread(cdrom_of, system_conn, vm, live=live) == (
            str(cached),
            ["hd"],
        )
    stored = specs.get(vm)
    assert stored is not None and stored.spec.cdrom == image
    assert stored.cdrom_path == str(cached)
    assert (await driver.describe(vm))["cdrom"] == str(cached)

    # The guest reads the disc: raw sectors first (the medium is there), then the file.
    async def readable() -> bool:
        out = await sh("dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | head -c 6 | tail -c 5")
        return out == "CD001"

    await until(readable, "the guest to see the inserted disc")
    out = await sh("mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr0 /mnt/cd && cat /mnt/cd/*")
    assert out == TEXT.decode().strip()
    await sh("umount /mnt/cd")

    # Eject live and in the definition; the guest no longer reads a disc.
    assert await ex.run(VmCdrom(vm_id=vm, image=None)) == {"cdrom": None}
    for live in (True, False):
        assert await asyncio.to_thread(cdrom_of, system_conn, vm, live=live) == (None, ["hd"])
    stored = specs.get(vm)
    assert stored is not None and stored.spec.cdrom is None and stored.cdrom_path is None

    async def ejected() -> bool:
        return not await readable()

    await until(ejected, "the guest to see the tray empty")

    # Boot order and a medium in the spec (a redefinition of the running VM): in the definition
    # at once, live at the next start.
    booting = spec.model_copy(update={"boot": ["cdrom", "hd"], "cdrom": image})
    await ex.run(VmDefine(spec=booting))
    assert await asyncio.to_thread(cdrom_of, system_conn, vm, live=False) == (
        str(cached),
        ["cdrom", "hd"],
    )
    assert fetched == [image.id]  # cached
    await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
    # Stopped: the change goes to the definition only.
    await ex.run(VmCdrom(vm_id=vm, image=None))
    assert await asyncio.to_thread(cdrom_of, system_conn, vm, live=False) == (
        None,
        ["cdrom", "hd"],
    )


async def test_a_disk_image_is_refused_for_the_drive_and_a_bad_iso_is_not_cached(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    vm = new_vm_id()
    data = make_iso({"A.TXT": b"a"})
    pool = DirPool(workdir / "pool")
    await pool.prepare()

    async def fetch(ref: ImageRef, dest: Path) -> None:
        await asyncio.to_thread(dest.write_bytes, data + b"tampered")

    specs = SpecStore(workdir / "vms")
    specs.open()
    ex = TaskExecutor(
        compute=driver, volumes=pool, specs=specs, faults=FaultPlan(), fetch=fetch, drift={}
    )
    spec = VmSpec(vm_id=vm, name=vm, cpus=1, memory_mb=64, disk_gb=1, vnc_password="pw")
    await ex.run(VmDefine(spec=spec))
    qcow_image = iso_ref(data).model_copy(update={"format": "qcow2"})
    with pytest.raises(InvalidInput, match="not an ISO"):
        await ex.run(VmCdrom(vm_id=vm, image=qcow_image))
    with pytest.raises(InvalidInput, match="checksum"):
        await ex.run(VmCdrom(vm_id=vm, image=iso_ref(data)))
    assert list(pool.images_dir.iterdir()) == []
    with pytest.raises(InvalidInput, match="ISO"):
        await pool.create_vm_disk(vm, iso_ref(data), 1, fetch)
    shutil.rmtree(workdir / "pool")
