"""DirPool's checks and cleanup that need no qemu-img: ids, sizes, checksums, fetch failures."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from corral.agent.storage.dirpool import FETCH_ATTEMPTS, GIB, DirPool
from corral.agent.storage.driver import VolumeDriver
from corral.api.agent import ImageRef
from corral.api.errors import AgentUnreachable, InvalidInput, StorageError
from tests.unit.storage.fakes import MemoryFetcher, all_files

DATA = b"\x00" * 4096 + b"corral"


def test_is_a_volume_driver(pool: DirPool) -> None:
    driver: VolumeDriver = pool
    assert driver.disk_path("vm-1") == str(pool.root / "vms" / "vm-1" / "root.qcow2")


@pytest.mark.parametrize("vm_id", ["", "..", "../etc", "a/b", ".hidden", "x" * 129, "a..b"])
async def test_unsafe_vm_ids_are_refused(pool: DirPool, fetcher: MemoryFetcher, vm_id: str) -> None:
    with pytest.raises(InvalidInput):
        pool.disk_path(vm_id)
    with pytest.raises(InvalidInput):
        await pool.create_vm_disk(vm_id, fetcher.serve(DATA), 1, fetcher)
    with pytest.raises(InvalidInput):
        await pool.delete_vm_disk(vm_id)
    assert not fetcher.calls
    assert not pool.root.exists()


@pytest.mark.parametrize(("image_id", "fmt"), [("../x", "raw"), ("img", "vmdk"), ("img", "../q")])
async def test_unsafe_image_ids_and_formats_are_refused(
    pool: DirPool, fetcher: MemoryFetcher, image_id: str, fmt: str
) -> None:
    image = fetcher.serve(DATA, image_id=image_id, fmt=fmt)
    with pytest.raises(InvalidInput):
        await pool.create_vm_disk("vm-1", image, 1, fetcher)
    assert not fetcher.calls
    assert not pool.root.exists()


@pytest.mark.parametrize("size_gb", [0, 1])
async def test_size_below_the_image_is_refused_before_fetching(
    pool: DirPool, fetcher: MemoryFetcher, size_gb: int
) -> None:
    image = fetcher.serve(DATA, vsize=GIB + 1)
    with pytest.raises(InvalidInput) as err:
        await pool.create_vm_disk("vm-1", image, size_gb, fetcher)
    assert err.value.context["min_size_gb"] == 2
    assert "at least 2 GiB" in err.value.message
    assert not fetcher.calls
    assert not pool.root.exists()


async def test_checksum_mismatch_leaves_no_file(pool: DirPool, fetcher: MemoryFetcher) -> None:
    image = fetcher.serve(DATA)
    fetcher.blobs[image.id] = DATA[:-1] + b"!"
    with pytest.raises(InvalidInput) as err:
        await pool.create_vm_disk("vm-1", image, 1, fetcher)
    assert err.value.context["expected_sha256"] == image.sha256
    assert err.value.context["actual_sha256"] != image.sha256
    assert all_files(pool.root) == ["images"]
    assert fetcher.calls[image.id] == FETCH_ATTEMPTS  # fetched again before giving up


async def test_a_corrupted_copy_is_fetched_again(pool: DirPool, fetcher: MemoryFetcher) -> None:
    image = fetcher.serve(DATA)
    good = DATA

    class Corrupting(MemoryFetcher):
        async def __call__(self, image: ImageRef, dest: Path) -> None:
            # the first copy arrives with a flipped byte, the second one intact
            self.blobs[image.id] = good[:-1] + b"!" if not self.calls[image.id] else good
            await super().__call__(image, dest)

    flaky = Corrupting()
    flaky.blobs = dict(fetcher.blobs)
    path = await pool.ensure_image(image, flaky)
    assert path.read_bytes() == good
    assert flaky.calls[image.id] == 2


async def test_truncated_download_leaves_no_file(pool: DirPool, fetcher: MemoryFetcher) -> None:
    image = fetcher.serve(DATA)
    fetcher.blobs[image.id] = DATA[:100]
    with pytest.raises(InvalidInput) as err:
        await pool.ensure_image(image, fetcher)
    assert err.value.context["actual_size"] == 100
    assert all_files(pool.root) == ["images"]


async def test_fetch_errors_pass_through_and_leave_no_file(
    pool: DirPool, fetcher: MemoryFetcher
) -> None:
    fetcher.error = AgentUnreachable("server down")
    with pytest.raises(AgentUnreachable):
        await pool.create_vm_disk("vm-1", fetcher.serve(DATA), 1, fetcher)
    assert all_files(pool.root) == ["images"]


async def test_foreign_fetch_errors_become_storage_errors(
    pool: DirPool, fetcher: MemoryFetcher
) -> None:
    fetcher.error = ConnectionResetError("reset by peer")
    with pytest.raises(StorageError) as err:
        await pool.create_vm_disk("vm-1", fetcher.serve(DATA), 1, fetcher)
    assert isinstance(err.value.__cause__, ConnectionResetError)
    assert all_files(pool.root) == ["images"]


async def test_cancelled_fetch_leaves_no_file(pool: DirPool, fetcher: MemoryFetcher) -> None:
    fetcher.delay = 10
    task = asyncio.create_task(pool.create_vm_disk("vm-1", fetcher.serve(DATA), 1, fetcher))
    await fetcher.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all_files(pool.root) == ["images"]


async def test_missing_qemu_img_is_a_storage_error(tmp_path: Path, fetcher: MemoryFetcher) -> None:
    pool = DirPool(tmp_path / "pool", qemu_img=str(tmp_path / "no-such-qemu-img"))
    with pytest.raises(StorageError) as err:
        await pool.create_vm_disk("vm-1", fetcher.serve(DATA), 1, fetcher)
    assert "no-such-qemu-img" in err.value.message
    assert all_files(pool.root) == ["images"]


async def test_delete_of_an_absent_disk_succeeds(pool: DirPool) -> None:
    await pool.delete_vm_disk("vm-1")
    await pool.delete_vm_disk("vm-1")
    assert not pool.root.exists()


async def test_capacity_is_the_file_system_of_the_pool(pool: DirPool) -> None:
    total, free = await pool.capacity_gb()  # the root need not exist yet
    usage = shutil.disk_usage(pool.root.parent)
    assert total == usage.total / GIB
    assert 0 < free <= total


async def test_prepare_makes_dirs_and_sweeps_leftovers(pool: DirPool) -> None:
    await pool.prepare()
    (pool.images_dir / ".img-1.raw.abc.part").write_bytes(b"partial")
    (pool.images_dir / "img-2.raw").write_bytes(b"complete")
    (pool.vms_dir / "vm-1").mkdir()
    (pool.vms_dir / "vm-1" / "root.qcow2.part").write_bytes(b"partial")
    (pool.vms_dir / "vm-2").mkdir()
    (pool.vms_dir / "vm-2" / "root.qcow2").write_bytes(b"complete")
    await pool.prepare()
    assert all_files(pool.root) == [
        "images",
        "images/img-2.raw",
        "vms",
        "vms/vm-2",
        "vms/vm-2/root.qcow2",
    ]
    assert {
        oct(os.stat(d).st_mode & 0o777) for d in (pool.root, pool.images_dir, pool.vms_dir)
    } == {"0o755"}
