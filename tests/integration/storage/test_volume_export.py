"""``export`` of the volume backends and ``export_vm_disk`` / ``adopt_image`` of DirPool with the
real qemu-img: local files, nfs-ganesha over QEMU's userspace NFS client, a single-node Ceph
(QEMU's rbd driver, the key in a secret object). The exported file is a standalone qcow2 with
the data the whole chain shows (``qemu-img compare`` against the source, patterns written into
each layer with qemu-io); a failure leaves neither ``dest`` nor its ``.part``; QEMU's image lock
stops the export of a file a running QEMU writes but not of the backing files it reads."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.storage.backend import VolumeBackend
from corral.agent.storage.dirpool import DirPool
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.api.agent import ImageRef, PoolRef, VolumeRef
from corral.api.errors import NotFound, StorageError
from tests.support.storage.ceph import CephCluster
from tests.support.storage.nfs import NfsExport
from tests.unit.storage.fakes import MemoryFetcher, image_ref

MIB = 1 << 20
LAYERS = {"v0": 0x11, "v1": 0x22, "v2": 0x33}
"""The pattern written into each file of the chain v0 <- v1 <- v2 (see ``make_chain``)."""


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def info(*argv: str) -> dict[str, object]:
    done = run("qemu-img", "info", "--output=json", "-U", *argv)
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def write(target: str, pattern: int, offset: int, fmt: str = "qcow2") -> None:
    done = run("qemu-io", "-f", fmt, "-c", f"write -P {pattern:#x} {offset} {MIB}", target)
    assert done.returncode == 0, done.stderr


def reads(target: str, pattern: int, offset: int) -> bool:
    done = run("qemu-io", "-f", "qcow2", "-c", f"read -P {pattern:#x} {offset} {MIB}", target)
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def compare(dest: Path, source_fmt: str, source: str) -> int:
    """``qemu-img compare`` of the exported ``dest`` with ``source``: 0 when the guest sees the
    same bytes (1 when they differ)."""
    done = run("qemu-img", "compare", "-f", "qcow2", "-F", source_fmt, str(dest), source)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode


def assert_standalone(dest: Path) -> None:
    data = info(str(dest))
    assert data["format"] == "qcow2"
    assert "backing-filename" not in data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def make_chain(backend: VolumeBackend, vol: VolumeRef, url: dict[str, str]) -> None:
    """``vol`` (active file v2) as v0 <- v1 <- v2, each file with its own data: v0's pattern at
    0-1 MiB and at 2 MiB (which v1 overwrites), v1's at 1 MiB and 2 MiB, v2's at 2 MiB (over
    both): ``url`` says how qemu-io reaches each file."""
    await backend.create(vol.model_copy(update={"name": "v0"}))
    write(url["v0"], LAYERS["v0"], 0)
    write(url["v0"], LAYERS["v0"], 2 * MIB)
    await backend.create_overlay(vol, "v1", "v0")
    write(url["v1"], LAYERS["v1"], MIB)
    write(url["v1"], LAYERS["v1"], 2 * MIB)
    await backend.create_overlay(vol, "v2", "v1")
    write(url["v2"], LAYERS["v2"], 2 * MIB)


def assert_chain_data(dest: Path, top: str) -> None:
    """What ``dest`` (an export of ``top``) shows layer by layer."""
    expected = {"v0": [0x11, 0x00, 0x11], "v1": [0x11, 0x22, 0x22], "v2": [0x11, 0x22, 0x33]}
    for index, pattern in enumerate(expected[top]):
        assert reads(str(dest), pattern, index * MIB), (top, index)


async def assert_missing_name_fails(
    backend: VolumeBackend, vol: VolumeRef, out: Path, name: str
) -> None:
    dest = out / "missing.qcow2"
    dest.write_bytes(b"an older export")
    with pytest.raises(StorageError) as err:
        await backend.export(vol, name, dest)
    assert err.value.context["reason"] == "not_found"
    assert (err.value.context["pool_id"], err.value.context["volume_id"]) == (
        vol.pool.id,
        vol.volume_id,
    )
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


# --- local ---------------------------------------------------------------------------------


def local_volume(root: Path, name: str = "v2", fmt: str = "qcow2") -> VolumeRef:
    pool = PoolRef(id="pool-local", type="local", settings={"path": str(root)})
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=1, format=fmt)


async def test_local_export_flattens_the_chain(tmp_path: Path, out: Path) -> None:
    root = tmp_path / "pool"
    backend, vol = LocalBackend(), local_volume(root)
    files = root / "volumes"
    await make_chain(backend, vol, {n: str(files / n) for n in LAYERS})
    assert info(str(files / "v2"))["backing-filename"] == "v1"  # a real chain

    for top in ("v2", "v1"):  # the active file, a snapshot file
        dest = out / f"{top}.qcow2"
        await backend.export(vol, top, dest)
        assert_standalone(dest)
        assert compare(dest, "qcow2", str(files / top)) == 0
        assert_chain_data(dest, top)
    assert compare(out / "v1.qcow2", "qcow2", str(files / "v2")) == 1
    await backend.export(vol, "v1", out / "v2.qcow2")  # an existing dest is replaced
    assert compare(out / "v2.qcow2", "qcow2", str(files / "v1")) == 0
    assert listing(out) == ["v1.qcow2", "v2.qcow2"]  # no .part
    assert listing(files) == ["v0", "v1", "v2"]  # the pool is untouched

    await assert_missing_name_fails(backend, vol, out, "v9")


async def test_local_export_of_a_raw_volume(tmp_path: Path, out: Path) -> None:
    backend, vol = LocalBackend(), local_volume(tmp_path / "pool", "r0", fmt="raw")
    await backend.create(vol)
    path = tmp_path / "pool" / "volumes" / "r0"
    write(str(path), 0x44, 5 * MIB, fmt="raw")
    await backend.export(vol, "r0", out / "r0.qcow2")
    assert_standalone(out / "r0.qcow2")
    assert compare(out / "r0.qcow2", "raw", str(path)) == 0


def failing_qemu_img(tmp_path: Path) -> str:
    """A qemu-img whose ``convert`` writes its output, then fails like a full disk."""
    script = tmp_path / "qemu-img"
    script.write_text(
        '#!/bin/sh\nqemu-img "$@" || exit 3\n'
        'case "$1" in convert) echo "qemu-img: No space left on device" >&2; exit 1;; esac\n'
    )
    script.chmod(0o755)
    return str(script)


async def test_local_failed_export_leaves_nothing(tmp_path: Path, out: Path) -> None:
    root = tmp_path / "pool"
    vol = local_volume(root, "v0")
    await LocalBackend().create(vol)
    backend = LocalBackend(qemu_img=failing_qemu_img(tmp_path))
    dest = out / "v0.qcow2"
    dest.write_bytes(b"an older export")
    with pytest.raises(StorageError, match="No space left on device") as err:
        await backend.export(vol, "v0", dest)
    assert (err.value.context["pool_id"], err.value.context["volume_id"]) == ("pool-local", "vol-1")
    assert listing(out) == []


def open_in_qemu(path: Path) -> subprocess.Popen[bytes]:
    """A QEMU (no machine, stopped) holding ``path`` (qcow2) open read-write, as a running VM
    does: its backing files are open read-only."""
    return subprocess.Popen(
        [
            "qemu-system-x86_64",
            *("-machine", "none", "-nodefaults", "-display", "none", "-S"),
            *("-blockdev", f"driver=file,filename={path},node-name=f"),
            *("-blockdev", "driver=qcow2,file=f,node-name=q"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_locked(holder: subprocess.Popen[bytes], path: Path) -> None:
    deadline = time.monotonic() + 10
    while run("qemu-io", "-f", "qcow2", "-c", "read 0 512", str(path)).returncode == 0:
        assert holder.poll() is None, "QEMU exited"
        assert time.monotonic() < deadline, "QEMU did not lock the image"
        await asyncio.sleep(0.05)


async def test_local_export_respects_qemus_image_lock(tmp_path: Path, out: Path) -> None:
    root = tmp_path / "pool"
    backend, vol = LocalBackend(), local_volume(root)
    files = root / "volumes"
    await make_chain(backend, vol, {n: str(files / n) for n in LAYERS})
    holder = open_in_qemu(files / "v2")
    try:
        await wait_locked(holder, files / "v2")
        with pytest.raises(StorageError, match="lock"):
            await backend.export(vol, "v2", out / "v2.qcow2")  # the running VM's active file
        assert listing(out) == []
        await backend.export(vol, "v1", out / "v1.qcow2")  # its backing: read-only, shared
    finally:
        holder.kill()
        holder.wait()
    assert compare(out / "v1.qcow2", "qcow2", str(files / "v1")) == 0


# --- NFS -----------------------------------------------------------------------------------


@pytest.mark.storage_servers
async def test_nfs_export_flattens_the_chain(nfs_dir: NfsExport, out: Path) -> None:
    backend = NfsBackend()
    pool = PoolRef(
        id="pool-nfs", type="nfs", settings={"server": nfs_dir.host, "export": nfs_dir.path}
    )
    vol = VolumeRef(volume_id="vol-1", pool=pool, name="v2", size_gb=1)
    url = {n: backend.url(vol.model_copy(update={"name": n})) for n in LAYERS}
    await make_chain(backend, vol, url)
    assert info(url["v2"])["backing-filename"] == url["v1"]  # a real chain of nfs:// URLs

    for top in ("v2", "v1"):
        dest = out / f"{top}.qcow2"
        await backend.export(vol, top, dest)
        assert_standalone(dest)
        assert compare(dest, "qcow2", url[top]) == 0
        assert_chain_data(dest, top)
    assert compare(out / "v1.qcow2", "qcow2", url["v2"]) == 1
    assert listing(out) == ["v1.qcow2", "v2.qcow2"]
    assert listing(nfs_dir.local("corral-volumes")) == ["v0", "v1", "v2"]

    await assert_missing_name_fails(backend, vol, out, "v9")


# --- RBD -----------------------------------------------------------------------------------


@pytest.fixture
def rbd_image(ceph_cluster: CephCluster) -> Iterator[str]:
    name = f"vol-{uuid.uuid4().hex[:12]}"
    yield name
    if name in ceph_cluster.rbd("ls", ceph_cluster.pool).split():
        ceph_cluster.rbd("rm", "--no-progress", f"{ceph_cluster.pool}/{name}")


@pytest.mark.storage_servers
async def test_rbd_export(
    ceph_cluster: CephCluster, rbd_image: str, tmp_path: Path, out: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    backend = RbdBackend(tmp_dir=keys)
    pool = PoolRef(
        id="pool-ceph",
        type="rbd",
        settings={
            "monitors": [ceph_cluster.mon_host],
            "pool": ceph_cluster.pool,
            "user": ceph_cluster.client,
        },
        credentials=ceph_cluster.key,
    )
    vol = VolumeRef(volume_id="vol-1", pool=pool, name=rbd_image, size_gb=1, format="raw")
    await backend.create(vol)
    source = ceph_cluster.qemu_filename(rbd_image)  # the key on a command line: tests only
    write(source, 0x55, 0, fmt="raw")
    write(source, 0x66, 7 * MIB, fmt="raw")

    dest = out / "rbd.qcow2"
    await backend.export(vol, rbd_image, dest)
    assert_standalone(dest)
    assert info(str(dest))["virtual-size"] == 1 << 30
    assert compare(dest, "raw", source) == 0
    assert reads(str(dest), 0x66, 7 * MIB)
    assert listing(out) == ["rbd.qcow2"]

    with pytest.raises(StorageError) as err:
        await backend.export(vol, f"{rbd_image}-gone", dest)
    assert err.value.context["reason"] == "not_found"
    assert ceph_cluster.key not in str(err.value) + repr(err.value.context)
    assert listing(out) == []
    assert listing(keys) == []  # every keyfile is gone


# --- DirPool -------------------------------------------------------------------------------


@pytest.fixture
def base_image(tmp_path: Path) -> bytes:
    """A 64 MiB qcow2 image with 0x77 in its first MiB."""
    path = tmp_path / "base.qcow2"
    assert run("qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M").returncode == 0
    write(str(path), 0x77, 0)
    return path.read_bytes()


@pytest.fixture
def dirpool(tmp_path: Path) -> DirPool:
    return DirPool(tmp_path / "pool")


async def test_dirpool_export_vm_disk_flattens_disk_and_base(
    dirpool: DirPool, base_image: bytes, out: Path
) -> None:
    fetcher = MemoryFetcher()
    image = fetcher.serve(base_image, image_id="img-q", fmt="qcow2", vsize=64 * MIB)
    disk = await dirpool.create_vm_disk("vm-1", image, 1, fetcher)
    write(disk, 0x88, MIB)
    dest = out / "vm-1.qcow2"
    await dirpool.export_vm_disk("vm-1", dest)
    assert_standalone(dest)
    assert info(str(dest))["virtual-size"] == 1 << 30
    assert compare(dest, "qcow2", disk) == 0
    assert reads(str(dest), 0x77, 0) and reads(str(dest), 0x88, MIB)
    assert listing(out) == ["vm-1.qcow2"]

    with pytest.raises(NotFound) as err:
        await dirpool.export_vm_disk("vm-9", out / "vm-9.qcow2")
    assert err.value.context["vm_id"] == "vm-9"

    holder = open_in_qemu(Path(disk))  # a running VM: its disk is locked for writing
    try:
        await wait_locked(holder, Path(disk))
        with pytest.raises(StorageError, match="lock") as locked:
            await dirpool.export_vm_disk("vm-1", dest)
        assert locked.value.context["vm_id"] == "vm-1"
    finally:
        holder.kill()
        holder.wait()
    assert listing(out) == []  # the old export was replaced by nothing


def capture(dirpool: DirPool, data: bytes, name: str) -> Path:
    """An exported image waiting in the pool's file system (where the capture task puts it)."""
    path = dirpool.root / name
    dirpool.root.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_dirpool_adopt_image_caches_it_once(dirpool: DirPool, base_image: bytes) -> None:
    image: ImageRef = image_ref(base_image, image_id="img-c", fmt="qcow2", vsize=64 * MIB)
    first = capture(dirpool, base_image, "capture-1.qcow2")
    cached = await dirpool.adopt_image(image, first)
    assert cached == dirpool.image_path(image) == dirpool.images_dir / "img-c.qcow2"
    assert cached.read_bytes() == base_image
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644
    assert not first.exists()

    second = capture(dirpool, b"another capture", "capture-2.qcow2")
    assert await dirpool.adopt_image(image, second) == cached
    assert not second.exists()  # deleted, the first copy kept
    assert cached.read_bytes() == base_image

    fetcher = MemoryFetcher()  # serves nothing: the cached copy must do
    disk = await dirpool.create_vm_disk("vm-1", image, 1, fetcher)
    assert fetcher.calls == {}
    assert info(disk)["backing-filename"] == str(cached)
    assert reads(disk, 0x77, 0)
