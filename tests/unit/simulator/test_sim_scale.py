"""A thousand simulated hosts in one process: every VM accounted, no host oversubscribed."""

from __future__ import annotations

import asyncio
import time

from corral.agent.compute.simulator import SimHost, simulated_host
from corral.api.agent import ImageRef
from tests.unit.simulator.simkit import Recorder, spec

IMAGE = ImageRef(
    id="img",
    sha256="0" * 64,
    size_bytes=1,
    virtual_size_bytes=1,
    format="qcow2",
    download_path="/x",
)


async def never(image: ImageRef, dest: object) -> None:
    raise AssertionError("not fetched")


async def test_thousand_hosts_ten_thousand_vms() -> None:
    """Prints creates per second (run with -s); asserts correctness only."""
    events = Recorder()
    hosts = [simulated_host(SimHost(name=f"h{i}", memory_mb=8192)) for i in range(1000)]
    for driver, _ in hosts:
        await driver.open(events)

    async def create(n: int) -> None:
        driver, pool = hosts[n % len(hosts)]
        vm = spec(f"vm-{n}", memory_mb=512, disk_gb=10)
        path = await pool.create_vm_disk(vm.vm_id, IMAGE, vm.disk_gb, never)
        await driver.define(vm, path)
        await driver.start(vm.vm_id)

    start = time.perf_counter()
    await asyncio.gather(*(create(n) for n in range(10_000)))
    elapsed = time.perf_counter() - start
    print(f"\n10,000 simulated creates on 1,000 hosts: {10_000 / elapsed:,.0f} creates/s")
    assert len(events.events) == 20_000
    assert all(d.usage().memory_mb_running == 5120 for d, _ in hosts)
    assert not any(d.overcommitted_ever for d, _ in hosts)
