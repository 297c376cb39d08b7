"""Fault injection and latencies of the simulated drivers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from corral.agent.compute.simulator import (
    SimHost,
    SimLatencies,
    SimulatedPool,
    SimulatorDriver,
    simulated_host,
)
from corral.agent.faults import FaultPlan
from corral.api.agent import ImageRef
from corral.api.errors import AgentUnreachable, InjectedFault, NotFound
from corral.api.vms import PowerState
from tests.unit.simulator.simkit import Recorder, spec

IMAGE = ImageRef(
    id="img-1",
    sha256="0" * 64,
    size_bytes=1,
    virtual_size_bytes=1,
    format="qcow2",
    download_path="/api/v1/agent/images/img-1/data",
)


async def no_fetch(image: ImageRef, dest: object) -> None:
    raise AssertionError("the simulated pool must not fetch by default")


def vm_ops(sim: SimulatorDriver) -> dict[str, Callable[[], Awaitable[None]]]:
    return {
        "vm.define": lambda: sim.define(spec(), "p"),
        "vm.start": lambda: sim.start("vm-1"),
        "vm.pause": lambda: sim.pause("vm-1"),
        "vm.resume": lambda: sim.resume("vm-1"),
        "vm.reboot": lambda: sim.reboot("vm-1"),
        "vm.stop": lambda: sim.stop("vm-1", force=True, timeout=0),
        "vm.undefine": lambda: sim.undefine("vm-1"),
    }


async def test_every_vm_operation_checks_its_fault_first(sim: SimulatorDriver) -> None:
    for op, call in vm_ops(sim).items():
        sim.fail_next(op)
        states_before = await sim.list_vms()
        with pytest.raises(InjectedFault) as exc:
            await call()
        assert exc.value.context == {"op": op}
        assert await sim.list_vms() == states_before  # nothing happened
        await call()  # only the next call failed
    assert sim.faults.pending() == {}
    assert all(sim.calls[op] == 2 for op in vm_ops(sim))


async def test_disk_operations_share_the_plan(sim: SimulatorDriver, pool: SimulatedPool) -> None:
    sim.fail_next("disk.create", times=2)
    for _ in range(2):
        with pytest.raises(InjectedFault):
            await pool.create_vm_disk("vm-1", IMAGE, 10, no_fetch)
    assert pool.disks == {}
    await pool.create_vm_disk("vm-1", IMAGE, 10, no_fetch)
    pool.fail_next("disk.delete", AgentUnreachable("cable cut"))
    with pytest.raises(AgentUnreachable):
        await pool.delete_vm_disk("vm-1")
    assert pool.disks == {"vm-1": 10}
    await pool.delete_vm_disk("vm-1")
    assert pool.disks == {}


async def test_a_plan_passed_in_is_the_one_used() -> None:
    plan = FaultPlan()
    sim, pool = simulated_host(SimHost(name="h"), faults=plan)
    assert sim.faults is plan and pool.faults is plan
    await sim.open(Recorder())
    plan.fail_next("vm.define")
    with pytest.raises(InjectedFault):
        await sim.define(spec(), "p")


async def test_latency_delays_the_effect_and_lets_operations_overlap(events: Recorder) -> None:
    latencies = SimLatencies(define=0.05, start=0.05, disk_create=0.05)
    sim, pool = simulated_host(SimHost(name="h"), latencies=latencies)
    await sim.open(events)
    defines = [
        asyncio.create_task(sim.define(spec(f"vm-{i}", memory_mb=64), "p")) for i in range(20)
    ]
    await asyncio.sleep(0)
    assert await sim.list_vms() == {}  # all twenty are sleeping, none done yet
    await asyncio.gather(*defines)
    assert len(await sim.list_vms()) == 20
    starting = asyncio.create_task(sim.start("vm-0"))
    creating = asyncio.create_task(pool.create_vm_disk("vm-0", IMAGE, 1, no_fetch))
    await asyncio.sleep(0)
    assert await sim.power_state("vm-0") == PowerState.stopped and pool.disks == {}
    await asyncio.gather(starting, creating)
    assert await sim.power_state("vm-0") == PowerState.running and pool.disks == {"vm-0": 1}


async def test_a_vm_undefined_during_a_slow_start_is_not_found(events: Recorder) -> None:
    sim, _ = simulated_host(SimHost(name="h"), latencies=SimLatencies(start=0.05))
    await sim.open(events)
    await sim.define(spec(), "p")
    starting = asyncio.create_task(sim.start("vm-1"))
    await asyncio.sleep(0)
    await sim.undefine("vm-1")
    with pytest.raises(NotFound, match="not defined"):
        await starting
    assert sim.usage().memory_mb_running == 0
