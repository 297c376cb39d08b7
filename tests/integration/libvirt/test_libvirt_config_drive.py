"""A NoCloud config drive on a real TCG guest (``$CORRAL_TEST_IMAGE``): the guest finds a second
CD-ROM (``/dev/sr1``, after the CD-ROM drive's ``/dev/sr0``) labelled ``cidata`` and reads
``network-config`` from it; redefined without the drive, the ISO file is gone and the guest boots
without it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.api.agent import ConfigDrive, VmSpec
from tests.integration.libvirt.libvirt_itest import qcow2, wait_for_log
from tests.integration.libvirt.test_libvirt_volumes import Guest

pytestmark = pytest.mark.libvirt

NETWORK = (
    "version: 2\n"
    "ethernets:\n"
    "  nic0:\n"
    "    match: {macaddress: '52:54:00:aa:bb:cc'}\n"
    "    addresses: [192.0.2.10/24]\n"
)
DRIVE = ConfigDrive(meta_data="instance-id: i-test\n", network_config=NETWORK)


async def boot(driver: LibvirtDriver, system_conn: Any, vm: str) -> Guest:
    """Start the VM and wait for its guest agent (the console log starts anew at every start)."""
    await driver.start(vm)
    await wait_for_log(driver.console_dir / f"{vm}.log", timeout=45)
    guest = Guest(await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}"))
    await asyncio.to_thread(guest.wait_for_agent)
    return guest


async def test_the_guest_reads_its_config_drive_until_it_is_redefined_without(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    test_image: Path,
    system_conn: Any,
) -> None:
    started = time.monotonic()
    vm = new_vm_id()
    spec = VmSpec(
        vm_id=vm,
        name=vm,
        cpus=1,
        memory_mb=256,
        disk_gb=1,
        vnc_password="pw",
        config_drive=DRIVE,
    )
    root = str(qcow2(workdir / "disk.qcow2", backing=test_image))
    iso = workdir / "configdrive" / f"{vm}.iso"
    await driver.define(spec, root)
    assert iso.is_file() and oct(iso.stat().st_mode & 0o777) == "0o600"

    guest = await boot(driver, system_conn, vm)

    async def sh(script: str) -> str:
        return await asyncio.to_thread(guest.sh, script)

    magic = "dd if=/dev/sr1 bs=2048 skip=16 count=1 2>/dev/null | head -c 6 | tail -c 5"
    assert await sh(magic) == "CD001"
    label = "dd if=/dev/sr1 bs=1 skip=32808 count=32 2>/dev/null"  # the primary volume id
    assert await sh(label) == "cidata"
    await sh("mkdir -p /mnt/ci && mount -t iso9660 -o ro /dev/sr1 /mnt/ci")
    try:
        assert (await sh("ls /mnt/ci")).split() == ["meta-data", "network-config", "user-data"]
        assert await sh("cat /mnt/ci/network-config") == NETWORK.strip()
        assert await sh("wc -c < /mnt/ci/user-data") == "0"  # empty, but there: cloud-init needs it
    finally:
        await sh("umount /mnt/ci")
    # The CD-ROM drive is still /dev/sr0, empty: the config drive took no place of it.
    tray = "dd if=/dev/sr0 bs=2048 count=1 >/dev/null 2>&1 && echo medium || echo empty"
    assert await sh(tray) == "empty"

    # Redefined without it (while running): the file goes at once, the drive at the next boot.
    await driver.define(spec.model_copy(update={"config_drive": None}), root)
    assert not iso.exists()
    assert (await driver.describe(vm))["config_drive"] is True  # the running VM still has it
    await driver.stop(vm, force=True, timeout=1)
    guest = await boot(driver, system_conn, vm)
    assert (await driver.describe(vm))["config_drive"] is False
    assert await sh("test -e /dev/sr1 && echo present || echo absent") == "absent"
    await driver.undefine(vm)
    assert time.monotonic() - started < 60
