"""LibvirtDriver on qemu:///system with a guest that sits in the BIOS (empty disk, TCG)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.api.agent import VmSpec
from corral.api.errors import DriverError, InvalidState, NotFound
from corral.api.vms import PowerState
from tests.integration.libvirt.libvirt_itest import Recorder, qcow2

pytestmark = pytest.mark.libvirt


def make_spec(vm_id: str, **changes: Any) -> VmSpec:
    fields: dict[str, Any] = {"name": f"vm-{vm_id}", "cpus": 1, "memory_mb": 64, "disk_gb": 1}
    return VmSpec(vm_id=vm_id, vnc_password="pw", **(fields | changes))


async def test_lifecycle_and_idempotency(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    events: Recorder,
    kvm_probe: tuple[bool, float],
) -> None:
    vm = new_vm_id()
    disk = qcow2(workdir / "disk.qcow2")
    for _ in range(2):
        await driver.define(make_spec(vm), str(disk))
    assert await driver.power_state(vm) == PowerState.stopped
    assert (await driver.list_vms())[vm] == PowerState.stopped
    described = await driver.describe(vm)
    assert described["vnc_port"] is None and described["disk_path"] == str(disk)
    assert described["domain_type"] == ("kvm" if kvm_probe[0] else "qemu")

    for _ in range(2):
        await driver.start(vm)
    await events.wait_for(vm, PowerState.running)
    described = await driver.describe(vm)
    assert isinstance(described["vnc_port"], int) and described["vnc_port"] >= 5900
    assert (described["cpus"], described["memory_mb"], described["name"]) == (1, 64, f"vm-{vm}")

    for _ in range(2):
        await driver.pause(vm)
    assert await driver.power_state(vm) == PowerState.paused
    await events.wait_for(vm, PowerState.paused)
    with pytest.raises(InvalidState):
        await driver.start(vm)
    for _ in range(2):
        await driver.resume(vm)
    assert await driver.power_state(vm) == PowerState.running

    # The BIOS ignores the ACPI reboot request: the driver resets after reboot_timeout.
    await driver.reboot(vm)
    assert await driver.power_state(vm) == PowerState.running

    for _ in range(2):
        await driver.stop(vm, force=True, timeout=0)
    assert await driver.power_state(vm) == PowerState.stopped
    assert (await events.wait_for(vm, PowerState.stopped)).reason == "stopped:destroyed"

    for _ in range(2):
        await driver.undefine(vm)
    assert await driver.power_state(vm) == PowerState.absent
    assert vm not in await driver.list_vms()
    with pytest.raises(NotFound):
        await driver.describe(vm)


async def test_graceful_stop_powers_off_a_guest_that_ignores_acpi(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    vm = new_vm_id()
    await driver.define(make_spec(vm), str(qcow2(workdir / "disk.qcow2")))
    await driver.start(vm)
    started = time.monotonic()
    await driver.stop(vm, force=False, timeout=1.0)
    assert time.monotonic() - started >= 1.0
    assert await driver.power_state(vm) == PowerState.stopped


async def test_undefine_powers_off_a_running_vm(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    vm = new_vm_id()
    await driver.define(make_spec(vm), str(qcow2(workdir / "disk.qcow2")))
    await driver.start(vm)
    log = driver.console_dir / f"{vm}.log"
    assert log.exists()
    await driver.undefine(vm)
    assert await driver.power_state(vm) == PowerState.absent
    assert not log.exists()


async def test_running_vm_cannot_change_size(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    vm = new_vm_id()
    disk = str(qcow2(workdir / "disk.qcow2"))
    await driver.define(make_spec(vm), disk)
    await driver.start(vm)
    await driver.define(make_spec(vm, name="renamed"), disk)
    with pytest.raises(InvalidState) as refused:
        await driver.define(make_spec(vm, memory_mb=96), disk)
    assert refused.value.context["memory_mb"] == 64
    await driver.stop(vm, force=True, timeout=0)
    await driver.define(make_spec(vm, cpus=2, memory_mb=96), disk)
    described = await driver.describe(vm)
    assert (described["cpus"], described["memory_mb"]) == (2, 96)


async def test_errors_map_to_corral_errors(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    with pytest.raises(NotFound):
        await driver.start("test-no-such-vm")
    await driver.undefine("test-no-such-vm")

    vm = new_vm_id()
    await driver.define(make_spec(vm), str(workdir / "missing.qcow2"))
    for action in (driver.pause, driver.resume, driver.reboot):
        with pytest.raises(InvalidState):
            await action(vm)
    with pytest.raises(DriverError) as failed:
        await driver.start(vm)
    assert isinstance(failed.value.context["libvirt_code"], int)
    assert failed.value.context["vm_id"] == vm
    assert await driver.power_state(vm) == PowerState.stopped


async def test_list_vms_ignores_other_domains(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path, system_conn: Any
) -> None:
    vm, foreign = new_vm_id(), new_vm_id()
    await driver.define(make_spec(vm), str(qcow2(workdir / "disk.qcow2")))
    system_conn.defineXML(  # named like Corral's but without Corral's metadata
        f"<domain type='qemu'><name>corral-{foreign}</name><memory unit='MiB'>16</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
    )
    vms = await driver.list_vms()
    assert vms[vm] == PowerState.stopped
    assert foreign not in vms
    assert (
        all(name.startswith("corral-") for name in (f"corral-{v}" for v in vms))
        and system_conn.lookupByName(f"corral-{foreign}").isPersistent()
    )


def test_domain_xml_is_what_libvirt_keeps(system_conn: Any) -> None:
    """Sanity of the test setup itself: libvirt validates our XML (VIR_DOMAIN_DEFINE_VALIDATE)."""
    with pytest.raises(libvirt.libvirtError):
        system_conn.defineXMLFlags(
            "<domain type='qemu'><name>corral-test-invalid</name><bogus/></domain>",
            libvirt.VIR_DOMAIN_DEFINE_VALIDATE,
        )
