"""The simulated volume driver: in-memory disks, pool capacity, optional image fetching."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from corral.agent.compute.simulator import SimHost, SimulatorDriver, simulated_host
from corral.agent.storage.driver import VolumeDriver
from corral.agent.storage.simulated import SimulatedPool
from corral.api.agent import ImageRef
from corral.api.errors import AgentUnreachable, InvalidInput, StorageError
from tests.unit.simulator.simkit import Recorder

DATA = b"not really a qcow2 image" * 100


def image(image_id: str = "img-1", data: bytes = DATA) -> ImageRef:
    return ImageRef(
        id=image_id,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        virtual_size_bytes=1 << 30,
        format="qcow2",
        download_path=f"/api/v1/agent/images/{image_id}/data",
    )


class Fetcher:
    """Writes ``data`` to the destination and counts calls; ``error`` makes it fail midway."""

    def __init__(self, data: bytes = DATA, error: Exception | None = None) -> None:
        self.data, self.error, self.calls = data, error, 0

    async def __call__(self, image: ImageRef, dest: Path) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)
        await asyncio.to_thread(dest.write_bytes, self.data[:10])
        if self.error is not None:
            raise self.error
        await asyncio.to_thread(dest.write_bytes, self.data)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_is_a_volume_driver() -> None:
    pool: VolumeDriver = SimulatedPool(host_name="h", disk_gb=10)
    assert pool.disk_path("vm-1") == "sim://h/vm-1/root.qcow2"


async def test_create_is_idempotent_and_accounted() -> None:
    pool, fetch = SimulatedPool(host_name="h", disk_gb=50), Fetcher()
    path = await pool.create_vm_disk("vm-1", image(), 20, fetch)
    assert path == "sim://h/vm-1/root.qcow2"
    assert await pool.create_vm_disk("vm-1", image(), 30, fetch) == path
    assert pool.disks == {"vm-1": 20}
    assert await pool.capacity_gb() == (50.0, 30.0)
    assert fetch.calls == 0  # no download unless asked for


async def test_a_full_pool_refuses_and_delete_frees() -> None:
    pool = SimulatedPool(host_name="h", disk_gb=50)
    await pool.create_vm_disk("vm-1", image(), 30, Fetcher())
    with pytest.raises(StorageError) as exc:
        await pool.create_vm_disk("vm-2", image(), 21, Fetcher())
    assert exc.value.context["reason"] == "pool_full"
    assert pool.disks == {"vm-1": 30} and pool.refusals == 1
    await pool.delete_vm_disk("vm-1")
    await pool.delete_vm_disk("vm-1")  # absent is success
    await pool.create_vm_disk("vm-2", image(), 50, Fetcher())
    assert await pool.capacity_gb() == (50.0, 0.0) and pool.peak_used_gb == 50


async def test_driver_facts_report_the_pool() -> None:
    sim, pool = simulated_host(SimHost(name="h", disk_gb=80))
    await sim.open(Recorder())
    await pool.create_vm_disk("vm-1", image(), 30, Fetcher())
    facts = await sim.facts()
    assert (facts.disk_gb_total, facts.disk_gb_free) == (80.0, 50.0)
    assert isinstance(sim, SimulatorDriver)


async def test_with_an_image_cache_each_image_is_fetched_once(tmp_path: Path) -> None:
    pool, fetch = SimulatedPool(host_name="h", disk_gb=100, image_cache=tmp_path), Fetcher()
    await asyncio.gather(*(pool.create_vm_disk(f"vm-{i}", image(), 1, fetch) for i in range(5)))
    await pool.create_vm_disk("vm-9", image(), 1, fetch)
    assert fetch.calls == 1 and len(pool.disks) == 6
    assert (tmp_path / "img-1.img").read_bytes() == DATA
    other = Fetcher(b"other")
    await pool.create_vm_disk("vm-10", image("img-2", b"other"), 1, other)
    assert other.calls == 1 and listing(tmp_path) == ["img-1.img", "img-2.img"]


async def test_a_corrupt_download_is_refused_and_removed(tmp_path: Path) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=100, image_cache=tmp_path)
    with pytest.raises(InvalidInput, match="checksum"):
        await pool.create_vm_disk("vm-1", image(), 1, Fetcher(b"tampered"))
    assert listing(tmp_path) == [] and pool.disks == {}
    await pool.create_vm_disk("vm-1", image(), 1, Fetcher())  # a later good download works
    assert pool.disks == {"vm-1": 1}


async def test_a_failed_download_leaves_no_partial_file(tmp_path: Path) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=100, image_cache=tmp_path)
    with pytest.raises(AgentUnreachable):
        await pool.create_vm_disk("vm-1", image(), 1, Fetcher(error=AgentUnreachable("down")))
    with pytest.raises(StorageError, match="cannot cache image img-1") as exc:
        await pool.create_vm_disk("vm-1", image(), 1, Fetcher(error=OSError("disk full")))
    assert isinstance(exc.value.__cause__, OSError)
    assert listing(tmp_path) == [] and pool.disks == {}
