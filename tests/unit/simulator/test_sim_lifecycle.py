"""The simulator driver's VM lifecycle: the ComputeDriver contract, events and guest helpers."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from corral.agent.compute.driver import ComputeDriver
from corral.agent.compute.simulator import SimHost, SimulatorDriver
from corral.api.agent import VmEvent
from corral.api.errors import DriverError, InvalidState, NotFound
from corral.api.vms import PowerState
from tests.unit.simulator.simkit import Recorder, spec


def test_is_a_compute_driver(host: SimHost) -> None:
    driver: ComputeDriver = SimulatorDriver(host)
    assert driver.capabilities.name == "simulator"


async def test_define_start_stop_undefine_with_events(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.define(spec(), "sim://sim1/vm-1/root.qcow2")
    assert await sim.power_state("vm-1") == PowerState.stopped
    assert await sim.describe("vm-1") == {
        "name": "name-vm-1",
        "cpus": 2,
        "memory_mb": 1024,
        "disk_path": "sim://sim1/vm-1/root.qcow2",
        "volumes": [],
        "nics": [],
        "vnc_port": None,
    }
    await sim.start("vm-1")
    assert (await sim.describe("vm-1"))["vnc_port"] == 5900
    await sim.stop("vm-1", force=False, timeout=60)
    await sim.start("vm-1")
    await sim.stop("vm-1", force=True, timeout=60)
    await sim.undefine("vm-1")
    assert await sim.power_state("vm-1") == PowerState.absent
    assert events.seen() == [
        ("vm-1", "stopped", "defined"),
        ("vm-1", "running", "booted"),
        ("vm-1", "stopped", "shutdown"),
        ("vm-1", "running", "booted"),
        ("vm-1", "stopped", "destroyed"),
        ("vm-1", "absent", "undefined"),
    ]


async def test_asking_for_the_current_state_is_success_without_event(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.undefine("never-defined")
    await sim.define(spec(), "p")
    await sim.define(spec(), "p")
    await sim.stop("vm-1", force=True, timeout=1)
    await sim.start("vm-1")
    await sim.start("vm-1")
    await sim.resume("vm-1")
    await sim.pause("vm-1")
    await sim.pause("vm-1")
    assert [e[1] for e in events.seen()] == ["stopped", "running", "paused"]
    assert sim.vms["vm-1"].boots == 1


async def test_impossible_transitions_raise_invalid_state(sim: SimulatorDriver) -> None:
    await sim.define(spec(), "p")
    for op in (sim.pause, sim.resume, sim.reboot):
        with pytest.raises(InvalidState):
            await op("vm-1")
    await sim.start("vm-1")
    await sim.pause("vm-1")
    with pytest.raises(InvalidState, match="paused"):
        await sim.start("vm-1")
    with pytest.raises(InvalidState):
        await sim.reboot("vm-1")
    assert await sim.power_state("vm-1") == PowerState.paused


async def test_unknown_vm_is_not_found(sim: SimulatorDriver) -> None:
    for op in (sim.start, sim.reboot, sim.pause, sim.resume, sim.describe):
        with pytest.raises(NotFound):
            await op("ghost")
    with pytest.raises(NotFound):
        await sim.stop("ghost", force=True, timeout=1)
    assert await sim.power_state("ghost") == PowerState.absent


async def test_reboot_counts_a_boot_without_a_power_event(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    events.clear()
    await sim.reboot("vm-1")
    assert sim.vms["vm-1"].boots == 2 and events.seen() == []


async def test_undefine_powers_off_first(sim: SimulatorDriver, events: Recorder) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    await sim.pause("vm-1")
    events.clear()
    await sim.undefine("vm-1")
    assert events.seen() == [("vm-1", "stopped", "destroyed"), ("vm-1", "absent", "undefined")]
    assert await sim.list_vms() == {}
    assert sim.usage().memory_mb_running == 0 and sim.usage().vms == 0


async def test_redefine_changes_a_stopped_vm_but_not_a_running_one(sim: SimulatorDriver) -> None:
    await sim.define(spec(), "p")
    await sim.define(spec(cpus=4, memory_mb=2048), "p2")
    assert await sim.describe("vm-1") == {
        "name": "name-vm-1",
        "cpus": 4,
        "memory_mb": 2048,
        "disk_path": "p2",
        "volumes": [],
        "nics": [],
        "vnc_port": None,
    }
    await sim.start("vm-1")
    with pytest.raises(InvalidState, match="stopped"):
        await sim.define(spec(cpus=2, memory_mb=2048), "p2")
    await sim.define(spec(cpus=4, memory_mb=2048).model_copy(update={"name": "renamed"}), "p2")
    assert (await sim.describe("vm-1"))["name"] == "renamed"
    assert sim.usage().cpus_defined == 4 and sim.usage().memory_mb_running == 2048


async def test_guest_poweroff_and_crash(sim: SimulatorDriver, events: Recorder) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    sim.guest_poweroff("vm-1")
    with pytest.raises(InvalidState):
        sim.guest_poweroff("vm-1")
    await sim.start("vm-1")
    sim.guest_crash("vm-1")
    assert await sim.power_state("vm-1") == PowerState.crashed
    assert sim.usage().memory_mb_running == 0
    await sim.start("vm-1")
    assert events.seen()[-4:] == [
        ("vm-1", "stopped", "guest shutdown"),
        ("vm-1", "running", "booted"),
        ("vm-1", "crashed", "crashed"),
        ("vm-1", "running", "booted"),
    ]


async def test_graceful_stop_of_a_guest_ignoring_acpi_waits_then_powers_off(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    sim.guest_ignores_acpi("vm-1")
    await sim.stop("vm-1", force=False, timeout=0.01)
    assert events.seen()[-1] == ("vm-1", "stopped", "destroyed")


async def test_guest_stopping_during_the_acpi_wait_is_not_powered_off_again(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    sim.guest_ignores_acpi("vm-1")
    stopping = asyncio.create_task(sim.stop("vm-1", force=False, timeout=5))
    await asyncio.sleep(0)
    sim.guest_poweroff("vm-1")
    await stopping
    assert events.seen()[-1] == ("vm-1", "stopped", "guest shutdown")


async def test_graceful_stop_of_a_paused_vm_powers_it_off(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    await sim.pause("vm-1")
    await sim.stop("vm-1", force=False, timeout=60)
    assert events.seen()[-1] == ("vm-1", "stopped", "destroyed")


async def test_vnc_ports_are_unique_among_running_vms_and_reused(sim: SimulatorDriver) -> None:
    for i in range(3):
        await sim.define(spec(f"vm-{i}", memory_mb=256), "p")
        await sim.start(f"vm-{i}")
    assert [sim.vms[f"vm-{i}"].vnc_port for i in range(3)] == [5900, 5901, 5902]
    await sim.stop("vm-1", force=True, timeout=0)
    await sim.define(spec("vm-3", memory_mb=256), "p")
    await sim.start("vm-3")
    assert sim.vms["vm-3"].vnc_port == 5901 and sim.vms["vm-1"].vnc_port is None


async def test_drift_made_behind_the_agent_shows_in_describe(sim: SimulatorDriver) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    sim.edit_behind_agent("vm-1", memory_mb=4096)
    described = await sim.describe("vm-1")
    assert (described["cpus"], described["memory_mb"]) == (2, 4096)
    assert sim.usage().memory_mb_running == 4096 and sim.usage().memory_mb_defined == 4096


async def test_closed_driver_refuses_calls_but_keeps_its_vms(
    sim: SimulatorDriver, events: Recorder
) -> None:
    await sim.define(spec(), "p")
    await sim.start("vm-1")
    await sim.close()
    with pytest.raises(DriverError, match="not open"):
        await sim.list_vms()
    sim.guest_poweroff("vm-1")  # nobody listens: no event
    later = Recorder()
    await sim.open(later)
    assert await sim.list_vms() == {"vm-1": PowerState.stopped}
    assert later.seen() == [] and events.seen()[-1] == ("vm-1", "running", "booted")


async def test_a_failing_event_sink_does_not_fail_the_operation(
    host: SimHost, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: VmEvent) -> None:
        raise RuntimeError("listener bug")

    driver = SimulatorDriver(host)
    await driver.open(broken)
    with caplog.at_level(logging.ERROR):
        await driver.define(spec(), "p")
    assert await driver.power_state("vm-1") == PowerState.stopped
    assert "event sink failed for VM vm-1" in caplog.text


async def test_facts(sim: SimulatorDriver) -> None:
    await sim.define(spec(disk_gb=30), "p")
    facts = await sim.facts()
    assert (facts.hostname, facts.cpu_threads, facts.memory_mb) == ("sim1", 8, 8192)
    assert (facts.hypervisor, facts.driver, facts.kvm_usable) == ("simulator", "simulator", False)
    assert (facts.disk_gb_total, facts.disk_gb_free) == (100.0, 100.0)  # the pool holds no disk


async def test_facts_without_a_pool_count_the_defined_disks(
    host: SimHost, events: Recorder
) -> None:
    driver = SimulatorDriver(host)
    await driver.open(events)
    await driver.define(spec(disk_gb=30), "p")
    facts = await driver.facts()
    assert (facts.disk_gb_total, facts.disk_gb_free) == (100.0, 70.0)


async def test_a_nic_removed_behind_the_agent_is_drift(
    sim: SimulatorDriver, tmp_path: Path
) -> None:
    from corral.agent.reconcile import reconcile
    from corral.agent.specs import SpecStore, StoredSpec
    from corral.api.agent import NicSpec

    specs = SpecStore(tmp_path / "vms")
    specs.open()
    vm = spec().model_copy(update={"nics": [NicSpec(nic_id="n1", mac="02:00:00:00:00:01")]})
    await sim.define(vm, "/d")
    specs.put(StoredSpec(spec=vm, disk_path="/d"))
    assert await reconcile(compute=sim, specs=specs) == {}
    await sim.detach_nic("vm-1", "n1", 0)  # behind the agent's back
    assert await reconcile(compute=sim, specs=specs) == {"vm-1": ["nics [] != spec ['n1']"]}
