"""Data volumes made from an image: ``LocalBackend.create_from`` with the real qemu-img on tmp
dirs, and the ``volume.create`` task with an image through the executor (simulator drivers, and
a real ``DirPool`` + ``LocalBackend``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from corral.agent.compute.simulator import SimHost, SimulatorDriver
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.dirpool import DirPool
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.simulated import SimulatedPool
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import ImageRef, PoolRef, VolumeCreateTask, VolumeRef
from corral.api.errors import InjectedFault, InvalidInput, StorageError

GIB = 1 << 30
MIB = 1 << 20


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def virtual_size(path: Path, fmt: str) -> int:
    done = run("qemu-img", "info", "--output=json", "-f", fmt, str(path))
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["virtual-size"])


def same_content(a: Path, fa: str, b: Path, fb: str) -> bool:
    """``qemu-img compare`` (a larger image must be zero past the smaller one's end)."""
    return run("qemu-img", "compare", "-f", fa, "-F", fb, str(a), str(b)).returncode == 0


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3 MiB image with data at known places, as raw and as qcow2."""
    d = tmp_path_factory.mktemp("images")
    raw = d / "img.raw"
    with raw.open("wb") as f:
        f.truncate(3 * MIB)
        f.seek(0)
        f.write(b"corral-boot" * 100)
        f.seek(2 * MIB + 7)
        f.write(bytes(range(256)) * 64)
    qcow2 = d / "img.qcow2"
    done = run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
    assert done.returncode == 0, done.stderr
    return {"raw": raw, "qcow2": qcow2}


def local_volume(root: Path, fmt: str = "qcow2", size_gb: int = 1) -> VolumeRef:
    pool = PoolRef(id="pool-1", type="local", settings={"path": str(root)})
    name = f"vol-1.{fmt}"
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=size_gb, format=fmt)


@pytest.mark.parametrize("src_fmt", ["qcow2", "raw"])
@pytest.mark.parametrize("vol_fmt", ["qcow2", "raw"])
async def test_local_create_from_copies_and_grows(
    tmp_path: Path, images: dict[str, Path], src_fmt: str, vol_fmt: str
) -> None:
    backend = LocalBackend()
    vol = local_volume(tmp_path / "pool", vol_fmt, size_gb=1)
    await backend.create_from(vol, images[src_fmt], src_fmt)
    path = backend.path(vol)
    assert virtual_size(path, vol_fmt) == GIB
    assert same_content(path, vol_fmt, images["raw"], "raw")
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


async def test_local_create_from_keeps_an_existing_volume(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    backend = LocalBackend()
    vol = local_volume(tmp_path / "pool")
    await backend.create(vol)  # blank
    await backend.create_from(vol, images["qcow2"], "qcow2")  # exists: kept as it is
    assert not same_content(backend.path(vol), "qcow2", images["raw"], "raw")
    await backend.create_from(vol, images["qcow2"], "qcow2")


async def test_local_create_from_that_fails_leaves_nothing(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    fake = tmp_path / "qemu-img"  # the real one runs (and makes the .part), then "fails"
    fake.write_text(
        '#!/bin/sh\nqemu-img "$@" || exit 3\n'
        'case "$1" in convert) echo "disk quota exceeded" >&2; exit 1;; esac\n'
    )
    fake.chmod(0o755)
    backend = LocalBackend(qemu_img=str(fake))
    vol = local_volume(tmp_path / "pool")
    with pytest.raises(StorageError, match="disk quota exceeded") as info:
        await backend.create_from(vol, images["qcow2"], "qcow2")
    assert info.value.context["volume_id"] == "vol-1"
    assert list((tmp_path / "pool" / "volumes").iterdir()) == []


async def test_local_create_from_refuses_a_larger_image_and_an_iso(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    big = tmp_path / "big.qcow2"
    assert run("qemu-img", "create", "-q", "-f", "qcow2", str(big), str(2 * GIB)).returncode == 0
    backend = LocalBackend()
    vol = local_volume(tmp_path / "pool", size_gb=1)
    with pytest.raises(InvalidInput) as info:
        await backend.create_from(vol, big, "qcow2")
    assert info.value.context["min_size_gb"] == 2
    with pytest.raises(InvalidInput):
        await backend.create_from(vol, images["raw"], "iso")
    assert not backend.path(vol).exists()
    volumes = tmp_path / "pool" / "volumes"
    assert not volumes.exists() or list(volumes.iterdir()) == []


async def test_local_create_from_a_corrupt_image_fails_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"not an image" * 100)
    backend = LocalBackend()
    vol = local_volume(tmp_path / "pool")
    with pytest.raises(InvalidInput):
        await backend.create_from(vol, junk, "qcow2")
    assert not backend.path(vol).exists()


# --- the volume.create task -------------------------------------------------------------


def image_ref(path: Path, fmt: str, image_id: str = "img-1") -> ImageRef:
    data = path.read_bytes()
    return ImageRef(
        id=image_id,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        virtual_size_bytes=virtual_size(path, "raw" if fmt == "iso" else fmt),
        format=fmt,
        download_path=f"/images/{image_id}",
    )


def executor(
    tmp: Path, volumes: object, backends: Backends, sources: dict[str, Path]
) -> TaskExecutor:
    specs = SpecStore(tmp / "specs")
    specs.open()
    fetched: list[str] = []

    async def fetch(image: ImageRef, dest: Path) -> None:
        fetched.append(image.id)
        dest.write_bytes(sources[image.id].read_bytes())

    ex = TaskExecutor(
        compute=SimulatorDriver(SimHost(name="h1"), faults=FaultPlan()),
        volumes=volumes,  # type: ignore[arg-type]
        specs=specs,
        faults=FaultPlan(),
        fetch=fetch,
        drift={},
        backends=backends,
    )
    ex.fetched = fetched  # type: ignore[attr-defined]
    return ex


async def test_task_with_dirpool_and_local_backend(tmp_path: Path, images: dict[str, Path]) -> None:
    ref = image_ref(images["qcow2"], "qcow2")
    backend = LocalBackend()
    ex = executor(
        tmp_path,
        DirPool(tmp_path / "root"),
        Backends({"local": backend}),
        {"img-1": images["qcow2"]},
    )
    vol = local_volume(tmp_path / "pool", "raw", size_gb=1)
    assert await ex.run(VolumeCreateTask(volume=vol, image=ref)) == {}
    assert await ex.run(VolumeCreateTask(volume=vol, image=ref)) == {}  # existing: success
    assert same_content(backend.path(vol), "raw", images["raw"], "raw")
    assert virtual_size(backend.path(vol), "raw") == GIB
    assert ex.fetched == ["img-1"]  # type: ignore[attr-defined]
    assert (tmp_path / "root" / "images" / "img-1.qcow2").is_file()  # in the image cache


async def test_task_with_the_simulator(tmp_path: Path, images: dict[str, Path]) -> None:
    faults = FaultPlan()
    sim_backend = SimulatedBackend(host_name="h1", faults=faults)
    cache = tmp_path / "cache"
    cache.mkdir()
    pool = SimulatedPool(host_name="h1", disk_gb=100, image_cache=cache)
    ex = executor(tmp_path, pool, Backends({"local": sim_backend}), {"img-1": images["qcow2"]})
    ref = image_ref(images["qcow2"], "qcow2")
    vol = local_volume(tmp_path / "pool", size_gb=2)
    await ex.run(VolumeCreateTask(volume=vol, image=ref))
    assert dict(sim_backend.volumes("pool-1")) == {"vol-1": 2}
    assert pool.fetches["img-1"] == 1

    faults.fail_next("volume.create")
    other = vol.model_copy(update={"volume_id": "vol-2", "name": "vol-2.qcow2"})
    with pytest.raises(InjectedFault):
        await ex.run(VolumeCreateTask(volume=other, image=ref))
    assert "vol-2" not in sim_backend.volumes("pool-1")


async def test_task_refuses_an_iso_and_a_too_small_volume(
    tmp_path: Path, images: dict[str, Path]
) -> None:
    sim_backend = SimulatedBackend(host_name="h1")
    pool = SimulatedPool(host_name="h1", disk_gb=100)
    ex = executor(tmp_path, pool, Backends({"local": sim_backend}), {})
    iso = image_ref(images["raw"], "iso")
    vol = local_volume(tmp_path / "pool")
    with pytest.raises(InvalidInput, match="iso") as info:
        await ex.run(VolumeCreateTask(volume=vol, image=iso))
    assert info.value.context["format"] == "iso"
    big = image_ref(images["qcow2"], "qcow2").model_copy(update={"virtual_size_bytes": 3 * GIB})
    with pytest.raises(InvalidInput) as info:
        await ex.run(VolumeCreateTask(volume=vol, image=big))
    assert info.value.context["min_size_gb"] == 3
    assert dict(sim_backend.volumes("pool-1")) == {}
    assert pool.calls["image.media"] == 0  # refused before any fetch
