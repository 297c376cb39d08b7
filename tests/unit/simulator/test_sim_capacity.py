"""The simulated host's capacity guard: oversubscription by the server is refused and recorded."""

from __future__ import annotations

import pytest

from corral.agent.compute.simulator import SimHost, SimulatorDriver
from corral.api.errors import DriverError
from corral.api.vms import PowerState
from tests.unit.simulator.simkit import Recorder, spec


async def opened(host: SimHost, events: Recorder | None = None) -> SimulatorDriver:
    driver = SimulatorDriver(host)
    await driver.open(events if events is not None else Recorder())
    return driver


async def test_define_up_to_the_memory_then_refuse_and_leave_nothing(events: Recorder) -> None:
    sim = await opened(SimHost(name="h", memory_mb=4096), events)
    await sim.define(spec("a", memory_mb=3072), "p")
    await sim.define(spec("b", memory_mb=1024), "p")  # exactly full
    assert not sim.overcommitted_ever
    with pytest.raises(DriverError) as exc:
        await sim.define(spec("c", memory_mb=16), "p")
    assert exc.value.context["reason"] == "host_capacity"
    assert "defined memory 4112 MiB > 4096 MiB" in exc.value.message
    assert await sim.power_state("c") == PowerState.absent
    assert [e.vm_id for e in events.events] == ["a", "b"]
    assert sim.overcommitted_ever and sim.capacity.refusals == 1
    assert sim.usage().memory_mb_defined == 4096


async def test_memory_overcommit_allows_defining_more_but_not_running_more() -> None:
    sim = await opened(SimHost(name="h", memory_mb=4096, memory_overcommit=2.0))
    for name in ("a", "b"):
        await sim.define(spec(name, memory_mb=4096), "p")
    await sim.start("a")
    with pytest.raises(DriverError, match="running memory 8192 MiB > 4096 MiB"):
        await sim.start("b")
    assert await sim.power_state("b") == PowerState.stopped
    assert sim.capacity.peak_memory_mb_running == 4096
    await sim.stop("a", force=True, timeout=0)
    await sim.start("b")
    assert sim.usage().memory_mb_running == 4096


async def test_a_paused_vm_keeps_its_memory() -> None:
    sim = await opened(SimHost(name="h", memory_mb=2048, memory_overcommit=2.0))
    await sim.define(spec("a", memory_mb=2048), "p")
    await sim.define(spec("b", memory_mb=2048), "p")
    await sim.start("a")
    await sim.pause("a")
    with pytest.raises(DriverError):
        await sim.start("b")


async def test_vcpus_are_unbounded_unless_a_cpu_overcommit_is_set() -> None:
    free = await opened(SimHost(name="h", cpus=2))
    await free.define(spec("a", cpus=64, memory_mb=16), "p")
    bounded = await opened(SimHost(name="h", cpus=2, cpu_overcommit=2.0))
    await bounded.define(spec("a", cpus=3, memory_mb=16), "p")
    with pytest.raises(DriverError, match="defined vCPUs 5 > 4"):
        await bounded.define(spec("b", cpus=2, memory_mb=16), "p")
    await bounded.define(spec("b", cpus=1, memory_mb=16), "p")
    assert bounded.capacity.peak_cpus_defined == 4


async def test_resizing_up_is_checked_and_shrinking_always_allowed() -> None:
    sim = await opened(SimHost(name="h", memory_mb=4096))
    await sim.define(spec("a", memory_mb=2048), "p")
    await sim.define(spec("b", memory_mb=2048), "p")
    with pytest.raises(DriverError):
        await sim.define(spec("b", memory_mb=2049), "p")
    assert sim.vms["b"].memory_mb == 2048
    await sim.define(spec("b", memory_mb=1024), "p")
    assert sim.usage().memory_mb_defined == 3072 and sim.capacity.peak_memory_mb_defined == 4096


async def test_without_enforcement_claims_pass_but_are_recorded() -> None:
    sim = await opened(SimHost(name="h", memory_mb=1024, enforce=False))
    await sim.define(spec("a", memory_mb=1024), "p")
    await sim.define(spec("b", memory_mb=1024), "p")
    await sim.start("a")
    await sim.start("b")
    assert sim.overcommitted_ever and sim.capacity.refusals == 0
    assert sim.capacity.peak_memory_mb_running == 2048


async def test_undefine_releases_the_claims() -> None:
    sim = await opened(SimHost(name="h", memory_mb=1024))
    for _ in range(3):
        await sim.define(spec("a", memory_mb=1024, disk_gb=5), "p")
        await sim.start("a")
        await sim.undefine("a")
    usage = sim.usage()
    assert (usage.vms, usage.cpus_defined, usage.memory_mb_defined, usage.disk_gb_defined) == (
        0,
        0,
        0,
        0,
    )
    assert not sim.overcommitted_ever
