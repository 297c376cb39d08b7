"""LocalBackend with the real qemu-img on tmp_path: files, sizes, idempotence, nothing left on
failure, unsafe names refused."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from corral.agent.storage.backend import DiskSource, VolumeBackend
from corral.agent.storage.local import LocalBackend
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InvalidInput, StorageError

GIB = 1 << 30


def info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, object] = json.loads(out)
    return data


def write_pattern(path: Path) -> None:
    cmd = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)


def vref(root: Path, name: str = "vol-1.qcow2", size_gb: int = 2) -> VolumeRef:
    pool = PoolRef(id="pool-1", type="local", settings={"path": str(root)})
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=size_gb)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "pools" / "fast"


@pytest.fixture
def backend() -> LocalBackend:
    return LocalBackend()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_create_makes_a_thin_qcow2_file(backend: LocalBackend, root: Path) -> None:
    checked: VolumeBackend = backend
    vol = vref(root)
    await checked.create(vol)
    path = root / "volumes" / "vol-1.qcow2"
    described = info(path)
    assert described["format"] == "qcow2"
    assert described["virtual-size"] == 2 * GIB
    assert path.stat().st_size < 1 << 20  # thin
    assert mode(path) == 0o600
    assert mode(path.parent) == mode(root) == mode(root.parent) == 0o755
    assert sorted(p.name for p in path.parent.iterdir()) == ["vol-1.qcow2"]
    assert backend.source(vol) == DiskSource(kind="file", path=str(path), format="qcow2")


async def test_create_keeps_an_existing_volume(backend: LocalBackend, root: Path) -> None:
    await backend.create(vref(root))
    path = root / "volumes" / "vol-1.qcow2"
    write_pattern(path)
    before = path.read_bytes()
    await backend.create(vref(root, size_gb=5))
    assert path.read_bytes() == before
    assert info(path)["virtual-size"] == 2 * GIB


async def test_concurrent_creates_make_one_file(backend: LocalBackend, root: Path) -> None:
    await asyncio.gather(*(backend.create(vref(root)) for _ in range(5)))
    assert [p.name for p in (root / "volumes").iterdir()] == ["vol-1.qcow2"]
    assert len(backend._locks) == 0  # no lock outlives its callers


async def test_resize_grows_and_never_shrinks(backend: LocalBackend, root: Path) -> None:
    vol = vref(root)
    await backend.create(vol)
    path = root / "volumes" / "vol-1.qcow2"
    await backend.resize(vol, 5)
    assert info(path)["virtual-size"] == 5 * GIB
    await backend.resize(vol, 3)  # smaller: nothing happens
    await backend.resize(vol, 5)  # same: nothing happens
    assert info(path)["virtual-size"] == 5 * GIB


async def test_resize_of_an_absent_volume_fails(backend: LocalBackend, root: Path) -> None:
    with pytest.raises(StorageError) as err:
        await backend.resize(vref(root), 5)
    assert err.value.context["reason"] == "not_found"
    assert err.value.context["volume_id"] == "vol-1"
    assert not (root / "volumes" / "vol-1.qcow2").exists()


async def test_delete_removes_the_file_and_absent_is_success(
    backend: LocalBackend, root: Path
) -> None:
    vol = vref(root)
    await backend.delete(vol)  # nothing there yet, not even the pool directory
    await backend.create(vol)
    (root / "volumes" / "vol-1.qcow2.part").write_bytes(b"left by a crash")
    await backend.delete(vol)
    assert list((root / "volumes").iterdir()) == []
    await backend.delete(vol)


def failing_qemu_img(tmp_path: Path) -> str:
    """A qemu-img that writes its output file, then fails as a full disk would."""
    script = tmp_path / "qemu-img"
    script.write_text(
        '#!/bin/sh\nfor a; do last2="$prev"; prev="$a"; done\n'
        'echo partial > "$last2"\necho "No space left on device" >&2\nexit 1\n'
    )
    script.chmod(0o755)
    return str(script)


async def test_a_failed_create_leaves_nothing(tmp_path: Path, root: Path) -> None:
    backend = LocalBackend(qemu_img=failing_qemu_img(tmp_path))
    with pytest.raises(StorageError) as err:
        await backend.create(vref(root))
    assert "No space left on device" in err.value.message
    assert err.value.context["pool_id"] == "pool-1"
    assert err.value.context["volume_id"] == "vol-1"
    assert list((root / "volumes").iterdir()) == []


async def test_a_missing_qemu_img_is_a_storage_error(tmp_path: Path, root: Path) -> None:
    backend = LocalBackend(qemu_img=str(tmp_path / "no-such-qemu-img"))
    with pytest.raises(StorageError) as err:
        await backend.create(vref(root))
    assert err.value.context["volume_id"] == "vol-1"
    assert list((root / "volumes").iterdir()) == []


async def test_a_cancelled_create_leaves_nothing(tmp_path: Path, root: Path) -> None:
    started = tmp_path / "started"
    os.mkfifo(started)
    script = tmp_path / "qemu-img"
    script.write_text(
        '#!/bin/sh\nfor a; do last2="$prev"; prev="$a"; done\n'
        f'echo partial > "$last2"\necho started > {started}\nexec sleep 60\n'
    )
    script.chmod(0o755)
    backend = LocalBackend(qemu_img=str(script))
    task = asyncio.create_task(backend.create(vref(root)))
    # the fake qemu-img has written its .part once it has said so through the FIFO
    assert await asyncio.to_thread(started.read_text) == "started\n"
    assert (root / "volumes" / "vol-1.qcow2.part").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list((root / "volumes").iterdir()) == []


@pytest.mark.parametrize(
    "name", ["", "..", "../x.qcow2", "a/b.qcow2", ".hidden", "x" * 201, "a..b", "v.qcow2.part"]
)
async def test_unsafe_names_are_refused(backend: LocalBackend, root: Path, name: str) -> None:
    vol = vref(root, name=name)
    for call in (backend.create(vol), backend.delete(vol), backend.resize(vol, 3)):
        with pytest.raises(InvalidInput):
            await call
    with pytest.raises(InvalidInput):
        backend.source(vol)
    assert not root.exists()


async def test_relative_pool_paths_are_refused(backend: LocalBackend, tmp_path: Path) -> None:
    pool = PoolRef(id="pool-1", type="local", settings={"path": "relative/dir"})
    vol = VolumeRef(volume_id="vol-1", pool=pool, name="vol-1.qcow2", size_gb=1)
    with pytest.raises(InvalidInput) as err:
        await backend.create(vol)
    assert err.value.context["pool_id"] == "pool-1"


async def test_usage_is_the_file_system_of_the_nearest_existing_directory(
    backend: LocalBackend, root: Path
) -> None:
    pool = vref(root).pool
    before = await backend.usage(pool)  # the pool directory does not exist yet
    fs = os.statvfs(root.parent.parent)
    assert before.total_gb == pytest.approx(fs.f_blocks * fs.f_frsize / GIB)
    assert 0 < before.free_gb <= before.total_gb
    await backend.create(vref(root))
    after = await backend.usage(pool)
    assert after.total_gb == before.total_gb
