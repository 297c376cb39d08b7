"""LibvirtDriver against libvirt's in-process ``test:///default`` hypervisor (no daemon, no QEMU):
idempotency, error mapping, events, metadata filtering."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import LibvirtDriver, ensure_event_loop
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.api.agent import VmEvent, VmSpec
from corral.api.errors import DriverError, InvalidInput, InvalidState, NotFound
from corral.api.vms import PowerState

URI = "test:///default"


@pytest.fixture
def raw_conn() -> Iterator[Any]:
    ensure_event_loop()
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@pytest.fixture
def spec() -> VmSpec:
    vm_id = f"unit-{uuid.uuid4().hex[:8]}"
    return VmSpec(vm_id=vm_id, name="unit", cpus=1, memory_mb=64, disk_gb=1, vnc_password="pw")


class Recorder:
    def __init__(self) -> None:
        self.events: list[VmEvent] = []
        self.threads: set[int] = set()

    def __call__(self, event: VmEvent) -> None:
        self.events.append(event)
        self.threads.add(threading.get_ident())

    async def wait_for(self, vm_id: str, state: PowerState) -> VmEvent:
        for _ in range(200):
            for event in self.events:
                if event.vm_id == vm_id and event.power_state == state:
                    return event
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {state} event for {vm_id}: {self.events}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def driver(tmp_path: Path, recorder: Recorder, spec: VmSpec) -> AsyncIterator[LibvirtDriver]:
    drv = LibvirtDriver(
        uri=URI,
        console_dir=tmp_path / "console",
        disk_root=tmp_path,
        kvm=False,
        reboot_timeout=0.2,
        poll_interval=0.01,
    )
    await drv.open(recorder)
    yield drv
    await drv.undefine(spec.vm_id)
    await drv.close()


async def test_every_operation_is_idempotent(driver: LibvirtDriver, spec: VmSpec) -> None:
    vm = spec.vm_id
    for _ in range(2):
        await driver.define(spec, "/d/x.qcow2")
    assert await driver.power_state(vm) == PowerState.stopped
    for action, state in [
        (driver.start, PowerState.running),
        (driver.pause, PowerState.paused),
        (driver.resume, PowerState.running),
    ]:
        for _ in range(2):
            await action(vm)
        assert await driver.power_state(vm) == state
    for _ in range(2):
        await driver.stop(vm, force=True, timeout=1)
    assert await driver.power_state(vm) == PowerState.stopped
    for _ in range(2):
        await driver.undefine(vm)
    assert await driver.power_state(vm) == PowerState.absent


async def test_graceful_stop_and_reboot_end_in_the_expected_state(
    driver: LibvirtDriver, spec: VmSpec
) -> None:
    await driver.define(spec, "/d/x.qcow2")
    await driver.start(spec.vm_id)
    await driver.reboot(spec.vm_id)
    assert await driver.power_state(spec.vm_id) == PowerState.running
    await driver.pause(spec.vm_id)
    await driver.stop(spec.vm_id, force=False, timeout=1)
    assert await driver.power_state(spec.vm_id) == PowerState.stopped


async def test_impossible_transitions_raise_invalid_state(
    driver: LibvirtDriver, spec: VmSpec
) -> None:
    await driver.define(spec, "/d/x.qcow2")
    for action in (driver.pause, driver.resume, driver.reboot):
        with pytest.raises(InvalidState):
            await action(spec.vm_id)
    await driver.start(spec.vm_id)
    await driver.pause(spec.vm_id)
    with pytest.raises(InvalidState):
        await driver.start(spec.vm_id)
    with pytest.raises(InvalidState):
        await driver.reboot(spec.vm_id)


async def test_unknown_vms_raise_not_found(driver: LibvirtDriver) -> None:
    for call in (
        driver.start("nope"),
        driver.pause("nope"),
        driver.resume("nope"),
        driver.reboot("nope"),
        driver.describe("nope"),
        driver.stop("nope", force=True, timeout=1),
    ):
        with pytest.raises(NotFound):
            await call
    assert await driver.power_state("nope") == PowerState.absent
    await driver.undefine("nope")


async def test_bad_vm_id_is_invalid_input(driver: LibvirtDriver, spec: VmSpec) -> None:
    with pytest.raises(InvalidInput):
        await driver.define(spec.model_copy(update={"vm_id": "a/b"}), "/d/x.qcow2")


async def test_running_vm_keeps_its_size(driver: LibvirtDriver, spec: VmSpec) -> None:
    await driver.define(spec, "/d/x.qcow2")
    await driver.start(spec.vm_id)
    await driver.define(spec.model_copy(update={"name": "renamed"}), "/d/x.qcow2")
    with pytest.raises(InvalidState):
        await driver.define(spec.model_copy(update={"cpus": 2}), "/d/x.qcow2")
    await driver.stop(spec.vm_id, force=True, timeout=1)
    resized = {"name": "renamed", "cpus": 2, "memory_mb": 128}
    await driver.define(spec.model_copy(update=resized), "/d/y.qcow2")
    described = await driver.describe(spec.vm_id)
    assert described["cpus"] == 2 and described["memory_mb"] == 128
    assert described["name"] == "renamed" and described["disk_path"] == "/d/y.qcow2"
    assert described["power_state"] == "stopped" and described["domain_type"] == "qemu"


async def test_events_reach_the_sink_on_the_event_loop_thread(
    driver: LibvirtDriver, spec: VmSpec, recorder: Recorder
) -> None:
    await driver.define(spec, "/d/x.qcow2")
    await driver.start(spec.vm_id)
    await driver.pause(spec.vm_id)
    await driver.stop(spec.vm_id, force=True, timeout=1)
    await recorder.wait_for(spec.vm_id, PowerState.paused)
    stopped = await recorder.wait_for(spec.vm_id, PowerState.stopped)
    assert stopped.reason == "stopped:destroyed"
    assert recorder.threads == {threading.get_ident()}
    assert [e.power_state for e in recorder.events if e.vm_id == spec.vm_id] == [
        PowerState.running,
        PowerState.paused,
        PowerState.stopped,
    ]


async def test_list_vms_ignores_domains_without_corral_metadata(
    driver: LibvirtDriver, spec: VmSpec, raw_conn: Any
) -> None:
    await driver.define(spec, "/d/x.qcow2")
    foreign = f"corral-foreign-{uuid.uuid4().hex[:8]}"
    dom = raw_conn.defineXML(
        f"<domain type='qemu'><name>{foreign}</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    try:
        vms = await driver.list_vms()
    finally:
        dom.undefine()
    assert vms[spec.vm_id] == PowerState.stopped
    assert foreign.removeprefix("corral-") not in vms
    assert "test" not in vms  # the test driver's own domain


def test_libvirt_errors_are_translated(raw_conn: Any) -> None:
    with pytest.raises(NotFound) as not_found, libvirt_errors(vm_id="x"):
        raw_conn.lookupByName("no-such-domain")
    assert not_found.value.context["libvirt_code"] == libvirt.VIR_ERR_NO_DOMAIN
    assert not_found.value.context["vm_id"] == "x"
    assert isinstance(not_found.value.__cause__, libvirt.libvirtError)
    transient = raw_conn.createXML(
        f"<domain type='qemu'><name>unit-{uuid.uuid4().hex[:8]}</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    try:
        with pytest.raises(InvalidState), libvirt_errors():
            transient.managedSave()  # "not valid for a transient domain"
    finally:
        transient.destroy()
    with pytest.raises(DriverError) as other, libvirt_errors():
        raw_conn.defineXML("<domain")
    assert other.value.context["libvirt_code"] == libvirt.VIR_ERR_XML_DETAIL


async def test_facts(driver: LibvirtDriver) -> None:
    facts = await driver.facts()
    assert (facts.driver, facts.hypervisor, facts.kvm_usable) == ("libvirt", "qemu", False)
    assert facts.memory_mb > 0 and 0 < facts.disk_gb_free <= facts.disk_gb_total
    assert facts.cpu_threads >= facts.cpu_cores >= facts.cpu_sockets >= 1
