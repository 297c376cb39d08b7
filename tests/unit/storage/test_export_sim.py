"""The simulated ``export`` (SimulatedBackend) and ``export_vm_disk`` / ``adopt_image``
(SimulatedPool): the bytes they write, their faults, missing sources and what they leave."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.agent.faults import FaultPlan
from corral.agent.storage.backend import VolumeBackend
from corral.agent.storage.driver import VolumeDriver
from corral.agent.storage.simulated import SimulatedPool
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import ImageRef, PoolRef, VolumeRef
from corral.api.errors import InjectedFault, NotFound, StorageError

POOL = PoolRef(id="pool-1", type="local", settings={"path": "/srv/pool"})
VOL = VolumeRef(volume_id="vol-1", pool=POOL, name="v0", size_gb=1)
DATA = b"captured image bytes"


def image_ref(image_id: str = "img-1") -> ImageRef:
    return ImageRef(
        id=image_id,
        sha256=hashlib.sha256(DATA).hexdigest(),
        size_bytes=len(DATA),
        virtual_size_bytes=1 << 30,
        format="qcow2",
        download_path=f"/api/v1/agent/images/{image_id}/data",
    )


async def no_fetch(image: ImageRef, dest: Path) -> None:
    raise AssertionError(f"image {image.id} fetched")


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- SimulatedBackend.export --------------------------------------------------------------


async def test_export_writes_the_documented_bytes(tmp_path: Path) -> None:
    backend = SimulatedBackend(host_name="sim-1")
    checked: VolumeBackend = backend
    await checked.create(VOL)
    await checked.create_overlay(VOL, "v1", "v0")
    dest = tmp_path / "out.qcow2"
    await checked.export(VOL, "v0", dest)
    assert dest.read_bytes() == b"simulated volume vol-1 file v0\n"
    await checked.export(VOL, "v1", dest)  # an existing dest is replaced
    assert dest.read_bytes() == b"simulated volume vol-1 file v1\n"
    assert listing(tmp_path) == ["out.qcow2"]  # no .part left
    assert backend.calls["volume.export"] == 2


@pytest.mark.parametrize("name", ["v0", "v9"])
async def test_export_of_a_missing_source_is_not_found(tmp_path: Path, name: str) -> None:
    """An unknown volume (``v0`` before any create) or an unknown file of a known volume."""
    backend = SimulatedBackend(host_name="sim-1")
    if name != "v0":
        await backend.create(VOL)
    dest = tmp_path / "out.qcow2"
    dest.write_bytes(b"an older export")
    with pytest.raises(StorageError) as err:
        await backend.export(VOL, name, dest)
    assert err.value.context["reason"] == "not_found"
    assert (err.value.context["pool_id"], err.value.context["volume_id"]) == ("pool-1", "vol-1")
    assert listing(tmp_path) == []  # dest absent after a failure, no .part


async def test_export_fault_comes_first(tmp_path: Path) -> None:
    faults = FaultPlan()
    backend = SimulatedBackend(host_name="sim-1", faults=faults)
    faults.fail_next("volume.export", StorageError("disk on fire"))
    with pytest.raises(StorageError, match="disk on fire"):
        await backend.export(VOL, "v0", tmp_path / "out")  # before the missing volume
    await backend.create(VOL)
    faults.fail_next("volume.export")
    with pytest.raises(InjectedFault):
        await backend.export(VOL, "v0", tmp_path / "out")
    await backend.export(VOL, "v0", tmp_path / "out")
    assert listing(tmp_path) == ["out"]
    assert backend.calls["volume.export"] == 3


# --- SimulatedPool.export_vm_disk / adopt_image --------------------------------------------


async def test_export_vm_disk_writes_the_documented_bytes(tmp_path: Path) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=10)
    checked: VolumeDriver = pool
    await checked.create_vm_disk("vm-1", image_ref(), 1, no_fetch)
    dest = tmp_path / "disk.qcow2"
    dest.write_bytes(b"old")
    await checked.export_vm_disk("vm-1", dest)
    assert dest.read_bytes() == b"simulated disk of vm-1\n"
    assert listing(tmp_path) == ["disk.qcow2"]
    assert pool.calls["disk.export"] == 1


async def test_export_vm_disk_without_a_disk_is_not_found(tmp_path: Path) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=10)
    dest = tmp_path / "disk.qcow2"
    dest.write_bytes(b"old")
    with pytest.raises(NotFound) as err:
        await pool.export_vm_disk("vm-9", dest)
    assert err.value.context["vm_id"] == "vm-9"
    assert listing(tmp_path) == []


async def test_export_vm_disk_fault_comes_first(tmp_path: Path) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=10)
    await pool.create_vm_disk("vm-1", image_ref(), 1, no_fetch)
    pool.fail_next("disk.export", StorageError("no space"))
    with pytest.raises(StorageError, match="no space"):
        await pool.export_vm_disk("vm-1", tmp_path / "disk")
    assert listing(tmp_path) == []
    await pool.export_vm_disk("vm-1", tmp_path / "disk")
    assert listing(tmp_path) == ["disk"]


async def test_adopt_into_the_image_cache(tmp_path: Path) -> None:
    cache, work = tmp_path / "cache", tmp_path / "work"
    cache.mkdir()
    work.mkdir()
    pool = SimulatedPool(host_name="h", disk_gb=10, image_cache=cache)
    checked: VolumeDriver = pool
    first, second = work / "a", work / "b"
    first.write_bytes(DATA)
    second.write_bytes(b"another capture of the same image")
    assert await checked.adopt_image(image_ref(), first) == cache / "img-1.img"
    assert await checked.adopt_image(image_ref(), second) == cache / "img-1.img"
    assert listing(work) == []  # both moved or deleted
    assert (cache / "img-1.img").read_bytes() == DATA  # the first one kept
    # the image counts as cached: a VM's disk needs no download
    await pool.create_vm_disk("vm-1", image_ref(), 1, no_fetch)
    assert pool.fetches["img-1"] == 0
    assert pool.calls["image.adopt"] == 2


async def test_adopt_without_a_cache_deletes_the_file(tmp_path: Path) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=10)
    file = tmp_path / "capture"
    file.write_bytes(DATA)
    path = await pool.adopt_image(image_ref(), file)
    assert path == Path("sim://h/images/img-1.qcow2")
    assert listing(tmp_path) == []
    with pytest.raises(StorageError, match="cannot add image img-1"):
        await pool.adopt_image(image_ref(), file)  # missing file


@pytest.mark.parametrize("cached", [False, True])
async def test_adopt_fault_comes_first(tmp_path: Path, cached: bool) -> None:
    pool = SimulatedPool(host_name="h", disk_gb=10, image_cache=tmp_path if cached else None)
    file = tmp_path / "capture"
    file.write_bytes(DATA)
    pool.fail_next("image.adopt")
    with pytest.raises(InjectedFault):
        await pool.adopt_image(image_ref(), file)
    assert file.exists()  # untouched
    await pool.adopt_image(image_ref(), file)
    assert not file.exists()
