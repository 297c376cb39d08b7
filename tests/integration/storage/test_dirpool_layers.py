"""Root-disk layers of a DirPool with the real qemu-img (linked clones): freeze in constant time,
a clone's disk on the layer, thaw, a freeze interrupted between its two halves finished by the
next call, and offline flatten keeping the data."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from corral.agent.storage.dirpool import DirPool
from corral.api.agent import ImageRef
from corral.api.errors import InvalidState, NotFound
from tests.integration.storage.test_dirpool_qemu_img import info, make_qcow2
from tests.unit.storage.fakes import MemoryFetcher

MARK = "write -P 0x6b 1M 64k"
READ = "read -P 0x6b 1M 64k"


def qemu_io(path: str, cmd: str) -> None:
    done = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", cmd, path], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "Pattern verification failed" not in done.stdout, done


def layer(layer_id: str, gib: int) -> ImageRef:
    return ImageRef(
        id=layer_id,
        sha256="",
        size_bytes=0,
        virtual_size_bytes=gib << 30,
        format="qcow2",
        download_path="",
    )


@pytest.fixture
async def pool_with_vm(tmp_path: Path) -> tuple[DirPool, MemoryFetcher, ImageRef]:
    pool = DirPool(tmp_path / "pool")
    await pool.prepare()
    fetcher = MemoryFetcher()
    image = fetcher.serve(make_qcow2(tmp_path, "64M"), image_id="base", fmt="qcow2", vsize=64 << 20)
    await pool.create_vm_disk("src", image, 2, fetcher)
    qemu_io(pool.disk_path("src"), MARK)
    return pool, fetcher, image


async def test_freeze_makes_a_layer_clones_and_source_share(
    pool_with_vm: tuple[DirPool, MemoryFetcher, ImageRef],
) -> None:
    pool, fetcher, image = pool_with_vm
    lay = layer("lay-1", 2)
    path = await pool.freeze_vm_disk("src", lay)
    assert path == str(pool.root / "images" / "lay-1.qcow2")
    assert info(pool.disk_path("src"))["full-backing-filename"] == path
    assert oct(Path(path).stat().st_mode & 0o777) == "0o644"
    assert await pool.freeze_vm_disk("src", lay) == path  # idempotent
    clone = await pool.create_vm_disk("clone", lay, 2, fetcher)
    assert fetcher.calls["lay-1"] == 0  # the layer is in the cache: nothing fetched
    assert info(clone)["full-backing-filename"] == path
    for disk in (pool.disk_path("src"), clone):
        qemu_io(disk, READ)  # the data written before the freeze
    # the source writing on does not change what the clone reads
    qemu_io(pool.disk_path("src"), "write -P 0x11 1M 64k")
    qemu_io(clone, READ)
    await pool.create_vm_disk("other", image, 2, fetcher)
    with pytest.raises(InvalidState):  # the layer exists and this disk is not on it
        await pool.freeze_vm_disk("other", lay)


async def test_thaw_undoes_a_freeze_and_is_idempotent(
    pool_with_vm: tuple[DirPool, MemoryFetcher, ImageRef],
) -> None:
    pool, _, _ = pool_with_vm
    lay = layer("lay-2", 2)
    await pool.freeze_vm_disk("src", lay)
    await pool.thaw_vm_disk("src", lay)
    assert not (pool.root / "images" / "lay-2.qcow2").exists()
    assert info(pool.disk_path("src"))["full-backing-filename"] == str(
        pool.root / "images" / "base.qcow2"
    )
    qemu_io(pool.disk_path("src"), READ)
    await pool.thaw_vm_disk("src", lay)  # nothing frozen: nothing to do


async def test_a_freeze_cut_between_rename_and_overlay_is_finished_or_thawed(
    pool_with_vm: tuple[DirPool, MemoryFetcher, ImageRef],
) -> None:
    pool, _, _ = pool_with_vm
    lay = layer("lay-3", 2)
    disk = Path(pool.disk_path("src"))
    dest = pool.root / "images" / "lay-3.qcow2"
    disk.replace(dest)  # what a crash after the rename leaves
    await pool.freeze_vm_disk("src", lay)
    assert info(disk)["full-backing-filename"] == str(dest)
    disk.unlink()  # again, and this time the rollback thaws
    await pool.thaw_vm_disk("src", lay)
    assert disk.is_file() and not dest.exists()
    qemu_io(str(disk), READ)


async def test_freeze_time_does_not_depend_on_the_disk_size(tmp_path: Path) -> None:
    """1 GiB and 20 GiB written-to disks freeze in about the same (small) time."""
    pool = DirPool(tmp_path / "pool")
    await pool.prepare()
    fetcher = MemoryFetcher()
    image = fetcher.serve(make_qcow2(tmp_path, "64M"), image_id="base", fmt="qcow2", vsize=64 << 20)
    took = {}
    for gib in (1, 20):
        await pool.create_vm_disk(f"vm{gib}", image, gib, fetcher)
        qemu_io(pool.disk_path(f"vm{gib}"), f"write -P 0x6b {gib * 1024 - 1}M 1M")
        started = time.monotonic()
        await pool.freeze_vm_disk(f"vm{gib}", layer(f"lay{gib}", gib))
        took[gib] = time.monotonic() - started
    assert info(pool.disk_path("vm20"))["virtual-size"] == 20 << 30
    print(f"\nfreeze: 1 GiB {took[1] * 1000:.1f} ms, 20 GiB {took[20] * 1000:.1f} ms")


async def test_flatten_offline_keeps_the_data_and_drops_the_backing(
    pool_with_vm: tuple[DirPool, MemoryFetcher, ImageRef],
) -> None:
    pool, fetcher, _ = pool_with_vm
    lay = layer("lay-4", 2)
    await pool.freeze_vm_disk("src", lay)
    clone = await pool.create_vm_disk("clone", lay, 2, fetcher)
    await pool.flatten_vm_disk("clone")
    assert "backing-filename" not in info(clone)
    qemu_io(clone, READ)
    await pool.flatten_vm_disk("clone")  # standalone already
    with pytest.raises(NotFound):
        await pool.flatten_vm_disk("nobody")
    with pytest.raises(NotFound):
        await pool.freeze_vm_disk("nobody", layer("lay-5", 1))
