"""DirPool with the real qemu-img: overlays on cached base images, and nothing left on failure."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from corral.agent.storage.dirpool import GIB, DirPool
from corral.api.agent import ImageRef
from corral.api.errors import InvalidInput, StorageError
from tests.unit.storage.fakes import MemoryFetcher, all_files


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def info(path: Path | str) -> dict[str, object]:
    data: dict[str, object] = json.loads(qemu_img("info", "--output=json", "-U", str(path)))
    return data


def make_qcow2(tmp_path: Path, virtual: str, name: str = "src.qcow2") -> bytes:
    path = tmp_path / name
    qemu_img("create", "-q", "-f", "qcow2", str(path), virtual)
    return path.read_bytes()


@pytest.fixture
def pool(tmp_path: Path) -> DirPool:
    return DirPool(tmp_path / "pool")


@pytest.fixture
def fetcher() -> MemoryFetcher:
    return MemoryFetcher()


@pytest.fixture
def qcow2_image(tmp_path: Path, fetcher: MemoryFetcher) -> ImageRef:
    return fetcher.serve(make_qcow2(tmp_path, "64M"), image_id="img-q", fmt="qcow2", vsize=64 << 20)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_creates_an_overlay_on_the_cached_image(
    pool: DirPool, fetcher: MemoryFetcher, qcow2_image: ImageRef
) -> None:
    path = await pool.create_vm_disk("vm-1", qcow2_image, 3, fetcher)
    assert path == pool.disk_path("vm-1") == str(pool.root / "vms/vm-1/root.qcow2")
    disk = info(path)
    base = pool.root / "images" / "img-q.qcow2"
    assert disk["format"] == "qcow2"
    assert disk["virtual-size"] == 3 * GIB
    assert disk["backing-filename"] == str(base)
    assert disk["backing-filename-format"] == "qcow2"
    assert all_files(pool.root) == [
        "images",
        "images/img-q.qcow2",
        "vms",
        "vms/vm-1",
        "vms/vm-1/root.qcow2",
    ]
    assert [mode(p) for p in (pool.root, pool.images_dir, pool.vms_dir, Path(path).parent)] == [
        0o755
    ] * 4
    assert mode(base) == 0o644
    assert mode(Path(path)) == 0o600


async def test_raw_images_work_too(tmp_path: Path, pool: DirPool, fetcher: MemoryFetcher) -> None:
    image = fetcher.serve(b"\x00" * (1 << 20), image_id="img-r", fmt="raw")
    path = await pool.create_vm_disk("vm-1", image, 1, fetcher)
    assert info(path)["backing-filename-format"] == "raw"


async def test_create_is_idempotent(
    pool: DirPool, fetcher: MemoryFetcher, qcow2_image: ImageRef
) -> None:
    first = await pool.create_vm_disk("vm-1", qcow2_image, 1, fetcher)
    before = os.stat(first)
    second = await pool.create_vm_disk("vm-1", qcow2_image, 5, fetcher)
    after = os.stat(second)
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert info(second)["virtual-size"] == GIB  # unchanged: an existing disk is returned as is
    assert fetcher.calls == {"img-q": 1}


async def test_concurrent_creates_fetch_the_image_once(
    pool: DirPool, fetcher: MemoryFetcher, qcow2_image: ImageRef
) -> None:
    fetcher.delay = 0.2
    paths = await asyncio.gather(
        *(pool.create_vm_disk(f"vm-{i}", qcow2_image, 1, fetcher) for i in range(3)),
        pool.create_vm_disk("vm-0", qcow2_image, 1, fetcher),
    )
    assert fetcher.calls == {"img-q": 1}
    assert len(set(paths)) == 3
    assert all(info(p)["backing-filename"] == str(pool.images_dir / "img-q.qcow2") for p in paths)


async def test_checksum_mismatch_leaves_no_file(
    pool: DirPool, fetcher: MemoryFetcher, qcow2_image: ImageRef
) -> None:
    good = fetcher.blobs["img-q"]
    fetcher.blobs["img-q"] = good[:-1] + b"\x01"
    with pytest.raises(InvalidInput, match="checksum"):
        await pool.create_vm_disk("vm-1", qcow2_image, 1, fetcher)
    assert all_files(pool.root) == ["images"]
    fetcher.blobs["img-q"] = good  # a later good download succeeds
    await pool.create_vm_disk("vm-1", qcow2_image, 1, fetcher)


async def test_size_below_the_real_virtual_size_is_refused(
    tmp_path: Path, pool: DirPool, fetcher: MemoryFetcher
) -> None:
    # The reference understates the virtual size: the check after the fetch catches it.
    image = fetcher.serve(make_qcow2(tmp_path, "2G"), image_id="big", fmt="qcow2", vsize=1)
    with pytest.raises(InvalidInput, match="at least 2 GiB") as err:
        await pool.create_vm_disk("vm-1", image, 1, fetcher)
    assert err.value.context["virtual_size_bytes"] == 2 * GIB
    assert all_files(pool.root) == ["images", "images/big.qcow2"]  # the cached base stays
    await pool.create_vm_disk("vm-1", image, 2, fetcher)


async def test_a_file_that_is_not_its_format_is_refused(
    pool: DirPool, fetcher: MemoryFetcher
) -> None:
    image = fetcher.serve(b"not a qcow2 image" * 100, image_id="bad", fmt="qcow2")
    with pytest.raises(InvalidInput, match="not a valid qcow2 image") as err:
        await pool.create_vm_disk("vm-1", image, 1, fetcher)
    assert err.value.context["stderr"]
    assert all_files(pool.root) == ["images"]


async def test_an_image_with_a_backing_file_is_refused(
    tmp_path: Path, pool: DirPool, fetcher: MemoryFetcher
) -> None:
    path = tmp_path / "sneaky.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", str(path), "1M")
    image = fetcher.serve(path.read_bytes(), image_id="sneaky", fmt="qcow2", vsize=1 << 20)
    with pytest.raises(InvalidInput, match="refers to other files") as err:
        await pool.create_vm_disk("vm-1", image, 1, fetcher)
    assert err.value.context["backing_file"] == "/etc/hostname"
    assert all_files(pool.root) == ["images"]


def failing_qemu_img(tmp_path: Path) -> str:
    """A qemu-img whose ``create`` fails the way a full disk does; other commands are real."""
    script = tmp_path / "qemu-img"
    script.write_text(
        '#!/bin/sh\n[ "$1" = create ] && { echo "qemu-img: No space left on device" >&2; exit 1; }\n'
        'exec qemu-img "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


async def test_qemu_img_failure_is_a_storage_error_and_leaves_no_disk(
    tmp_path: Path, fetcher: MemoryFetcher, qcow2_image: ImageRef
) -> None:
    pool = DirPool(tmp_path / "pool", qemu_img=failing_qemu_img(tmp_path))
    with pytest.raises(StorageError) as err:
        await pool.create_vm_disk("vm-1", qcow2_image, 1, fetcher)
    assert err.value.context["stderr"] == "qemu-img: No space left on device"
    assert err.value.context["returncode"] == 1
    assert "No space left on device" in err.value.message
    assert all_files(pool.root) == ["images", "images/img-q.qcow2", "vms"]  # vm dir removed

    (pool.vms_dir / "vm-2").mkdir()  # a directory this call did not create is kept
    (pool.vms_dir / "vm-2" / "seed.iso").write_bytes(b"seed")
    with pytest.raises(StorageError):
        await pool.create_vm_disk("vm-2", qcow2_image, 1, fetcher)
    assert all_files(pool.vms_dir) == ["vm-2", "vm-2/seed.iso"]


async def test_delete_removes_the_vm_dir_and_keeps_the_image(
    pool: DirPool, fetcher: MemoryFetcher, qcow2_image: ImageRef
) -> None:
    await pool.create_vm_disk("vm-1", qcow2_image, 1, fetcher)
    await pool.create_vm_disk("vm-2", qcow2_image, 1, fetcher)
    await pool.delete_vm_disk("vm-1")
    await pool.delete_vm_disk("vm-1")
    assert all_files(pool.root) == [
        "images",
        "images/img-q.qcow2",
        "vms",
        "vms/vm-2",
        "vms/vm-2/root.qcow2",
    ]
    # and the disk can be made again
    await pool.create_vm_disk("vm-1", qcow2_image, 1, fetcher)
    assert fetcher.calls == {"img-q": 1}
