"""LibvirtDriver with guests that run code: the boot-sector guest (always available) and the
bootable test image (``$CORRAL_TEST_IMAGE``, with the QEMU guest agent)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.api.agent import VmSpec
from corral.api.vms import PowerState
from tests.integration.libvirt.libvirt_itest import (
    Recorder,
    boot_sector_disk,
    qcow2,
    wait_for_log,
)

pytestmark = pytest.mark.libvirt


def spec(vm_id: str, memory_mb: int = 64) -> VmSpec:
    return VmSpec(
        vm_id=vm_id, name=vm_id, cpus=1, memory_mb=memory_mb, disk_gb=1, vnc_password="pw"
    )


async def test_guest_powering_itself_off_sends_a_stopped_event(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path, events: Recorder
) -> None:
    vm = new_vm_id()
    disk = boot_sector_disk(workdir / "disk.qcow2", poweroff_after_ticks=18)  # ~1 s after boot
    await driver.define(spec(vm), str(disk))
    await driver.start(vm)
    await wait_for_log(driver.console_dir / f"{vm}.log")
    stopped = await events.wait_for(vm, PowerState.stopped, timeout=15)
    assert stopped.reason == "stopped:shutdown"
    assert await driver.power_state(vm) == PowerState.stopped
    assert [e.power_state for e in events.of(vm)][-1] == PowerState.stopped


async def test_graceful_stop_of_a_guest_that_obeys_acpi(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path, events: Recorder
) -> None:
    vm = new_vm_id()
    await driver.define(spec(vm), str(boot_sector_disk(workdir / "disk.qcow2")))
    await driver.start(vm)
    await wait_for_log(driver.console_dir / f"{vm}.log")
    await driver.pause(vm)  # a paused guest is resumed so that it can see the button
    await driver.stop(vm, force=False, timeout=30)
    assert await driver.power_state(vm) == PowerState.stopped
    # The guest powered off by itself (shutdown), it was not destroyed after the timeout.
    assert (await events.wait_for(vm, PowerState.stopped)).reason == "stopped:shutdown"


async def test_acpi_reboot_restarts_the_guest(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    vm = new_vm_id()
    await driver.define(spec(vm), str(boot_sector_disk(workdir / "disk.qcow2")))
    await driver.start(vm)
    log = driver.console_dir / f"{vm}.log"
    await wait_for_log(log)
    started = time.monotonic()
    await driver.reboot(vm)
    assert time.monotonic() - started < 3  # the guest obeyed: no fallback to reset
    await wait_for_log(log, count=2)
    assert await driver.power_state(vm) == PowerState.running


async def test_restart_truncates_the_console_log(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    vm = new_vm_id()
    await driver.define(spec(vm), str(boot_sector_disk(workdir / "disk.qcow2")))
    log = driver.console_dir / f"{vm}.log"
    for _ in range(2):
        await driver.start(vm)
        await wait_for_log(log)
        await driver.stop(vm, force=True, timeout=0)
    assert log.read_text().count("GUEST-READY") == 1


async def test_bootable_image_with_guest_agent(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    events: Recorder,
    test_image: Path,
    system_conn: Any,
) -> None:
    vm = new_vm_id()
    overlay = qcow2(workdir / "disk.qcow2", backing=test_image)
    await driver.define(spec(vm, memory_mb=256), str(overlay))
    await driver.start(vm)
    await wait_for_log(driver.console_dir / f"{vm}.log", timeout=90)
    dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}")

    def ping() -> object:
        for _ in range(100):
            try:
                return json.loads(
                    libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
                )
            except libvirt.libvirtError:  # agent not connected yet
                time.sleep(0.2)
        raise AssertionError("guest agent never answered")

    assert await asyncio.to_thread(ping) == {"return": {}}
    await driver.stop(vm, force=False, timeout=60)
    assert (await events.wait_for(vm, PowerState.stopped)).reason == "stopped:shutdown"
