"""The simulator compute driver: a first-class driver with real state, capacity and faults."""

from __future__ import annotations

from pathlib import Path

from corral.agent.compute.simulator.capacity import SimCapacity
from corral.agent.compute.simulator.driver import SimulatorDriver
from corral.agent.compute.simulator.model import SimDisk, SimHost, SimLatencies, SimUsage, SimVm
from corral.agent.faults import FaultPlan
from corral.agent.storage.simulated import SimulatedPool

__all__ = [
    "SimCapacity",
    "SimDisk",
    "SimHost",
    "SimLatencies",
    "SimUsage",
    "SimVm",
    "SimulatedPool",
    "SimulatorDriver",
    "simulated_host",
]


def simulated_host(
    host: SimHost,
    *,
    faults: FaultPlan | None = None,
    latencies: SimLatencies | None = None,
    image_cache: Path | None = None,
) -> tuple[SimulatorDriver, SimulatedPool]:
    """A compute driver and a volume driver for one simulated host, sharing one ``FaultPlan``.

    The pool has ``host.disk_gb`` and the disk latencies; the driver reports the pool's capacity
    in its facts.
    """
    faults = faults if faults is not None else FaultPlan()
    latencies = latencies if latencies is not None else SimLatencies()
    pool = SimulatedPool(
        host_name=host.name,
        disk_gb=host.disk_gb,
        faults=faults,
        create_latency=latencies.disk_create,
        delete_latency=latencies.disk_delete,
        image_cache=image_cache,
    )
    driver = SimulatorDriver(host, faults=faults, latencies=latencies, pool=pool)
    return driver, pool
