"""Fixtures for the simulator drivers: an opened simulated host that records its events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from corral.agent.compute.simulator import SimHost, SimulatedPool, SimulatorDriver, simulated_host
from tests.unit.simulator.simkit import Recorder


@pytest.fixture
def events() -> Recorder:
    return Recorder()


@pytest.fixture
def host() -> SimHost:
    return SimHost(name="sim1", cpus=8, memory_mb=8192, disk_gb=100.0)


@pytest.fixture
async def sim(host: SimHost, events: Recorder) -> AsyncIterator[SimulatorDriver]:
    driver, _ = simulated_host(host)
    await driver.open(events)
    yield driver
    await driver.close()


@pytest.fixture
def pool(sim: SimulatorDriver) -> SimulatedPool:
    assert isinstance(sim.pool, SimulatedPool)
    return sim.pool
