"""``create_from`` of the NFS and RBD backends against the real servers (nfs-ganesha, single-node
Ceph): the volume holds the image's data (``qemu-img compare`` over ``nfs://`` / QEMU's rbd
driver with the key in a secret object), grown to ``size_gb``; existing is kept; a failure
leaves nothing."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import StorageError
from tests.support.storage.ceph import CephCluster
from tests.support.storage.nfs import NfsExport

pytestmark = pytest.mark.storage_servers

GIB = 1 << 30
MIB = 1 << 20


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
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


def compare(raw: Path, *target: str) -> subprocess.CompletedProcess[str]:
    """``qemu-img compare`` of the raw image with ``target`` (qemu-img arguments)."""
    return run("qemu-img", "compare", "-f", "raw", *target[:-1], str(raw), target[-1])


# --- NFS -----------------------------------------------------------------------------------


def nfs_volume(export: NfsExport, fmt: str, size_gb: int = 1) -> VolumeRef:
    pool = PoolRef(
        id="pool-nfs", type="nfs", settings={"server": export.host, "export": export.path}
    )
    name = f"vol-{uuid.uuid4().hex[:8]}.{fmt}"
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=size_gb, format=fmt)


@pytest.mark.parametrize(("src_fmt", "vol_fmt"), [("qcow2", "qcow2"), ("qcow2", "raw")])
async def test_nfs_create_from(
    nfs_dir: NfsExport, images: dict[str, Path], src_fmt: str, vol_fmt: str
) -> None:
    backend = NfsBackend()
    vol = nfs_volume(nfs_dir, vol_fmt)
    await backend.create_from(vol, images[src_fmt], src_fmt)
    url = backend.url(vol)
    info = run("qemu-img", "info", "--output=json", "-f", vol_fmt, url)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["virtual-size"] == GIB
    done = compare(images["raw"], "-F", vol_fmt, url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run("qemu-img", "info", backend.url(vol, suffix=".part")).returncode != 0

    await backend.resize(vol, 1)  # the grown file is a normal volume
    blank = nfs_volume(nfs_dir, vol_fmt)
    await backend.create(blank)
    await backend.create_from(blank, images[src_fmt], src_fmt)  # exists: kept
    assert compare(images["raw"], "-F", vol_fmt, backend.url(blank)).returncode == 1
    await backend.delete(vol)
    await backend.delete(blank)


async def test_nfs_failed_create_from_leaves_nothing(
    nfs_dir: NfsExport, images: dict[str, Path], tmp_path: Path
) -> None:
    fake = tmp_path / "qemu-img"  # the real one makes the .part, then "fails"
    fake.write_text(
        '#!/bin/sh\nqemu-img "$@" || exit 3\n'
        'case "$1" in convert) echo "disk quota exceeded" >&2; exit 1;; esac\n'
    )
    fake.chmod(0o755)
    backend = NfsBackend(qemu_img=str(fake))
    vol = nfs_volume(nfs_dir, "qcow2")
    with pytest.raises(StorageError, match="disk quota exceeded"):
        await backend.create_from(vol, images["qcow2"], "qcow2")
    real = NfsBackend()
    assert run("qemu-img", "info", real.url(vol)).returncode != 0
    assert run("qemu-img", "info", real.url(vol, suffix=".part")).returncode != 0


# --- RBD -----------------------------------------------------------------------------------


def rbd_volume(ceph: CephCluster, name: str, size_gb: int = 1) -> VolumeRef:
    pool = PoolRef(
        id="pool-ceph",
        type="rbd",
        settings={"monitors": [ceph.mon_host], "pool": ceph.pool, "user": ceph.client},
        credentials=ceph.key,
    )
    return VolumeRef(volume_id=name, pool=pool, name=name, size_gb=size_gb, format="raw")


def rbd_images(ceph: CephCluster) -> list[str]:
    return ceph.rbd("ls", ceph.pool).split()


@pytest.fixture
def image(ceph_cluster: CephCluster) -> Iterator[str]:
    name = f"vol-{uuid.uuid4().hex[:12]}"
    yield name
    for n in (name, name + ".part"):
        if n in rbd_images(ceph_cluster):
            ceph_cluster.rbd("rm", "--no-progress", f"{ceph_cluster.pool}/{n}")


def rbd_target(ceph: CephCluster, name: str, secret: Path) -> list[str]:
    host, port = ceph.mon_host.split(":")
    file = {"driver": "rbd", "pool": ceph.pool, "image": name, "user": ceph.client}
    file |= {"server": [{"host": host, "port": port}], "key-secret": "sec0"}
    spec = "json:" + json.dumps({"driver": "raw", "file": file})
    return ["--object", f"secret,id=sec0,file={secret},format=base64", spec]


@pytest.mark.parametrize("src_fmt", ["qcow2", "raw"])
async def test_rbd_create_from(
    ceph_cluster: CephCluster,
    images: dict[str, Path],
    image: str,
    tmp_path: Path,
    src_fmt: str,
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    backend = RbdBackend(tmp_dir=keys)
    vol = rbd_volume(ceph_cluster, image, size_gb=1)
    await backend.create_from(vol, images[src_fmt], src_fmt)
    assert image in rbd_images(ceph_cluster)
    assert image + ".part" not in rbd_images(ceph_cluster)
    info = json.loads(ceph_cluster.rbd("info", f"{ceph_cluster.pool}/{image}", "--format", "json"))
    assert int(info["size"]) == GIB
    secret = tmp_path / "secret"
    secret.write_text(ceph_cluster.key)
    target = rbd_target(ceph_cluster, image, secret)
    done = run(
        "qemu-img", "compare", "-f", "raw", target[0], target[1], str(images["raw"]), target[2]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    await backend.create_from(vol, images[src_fmt], src_fmt)  # exists: success
    assert list(keys.iterdir()) == []  # every keyfile is gone


async def test_rbd_failed_create_from_leaves_nothing(
    ceph_cluster: CephCluster, images: dict[str, Path], image: str, tmp_path: Path
) -> None:
    fake = tmp_path / "qemu-img"  # the real one copies, then "fails"
    fake.write_text(
        '#!/bin/sh\nqemu-img "$@" || exit 3\n'
        'case "$1" in convert) echo "connection reset" >&2; exit 1;; esac\n'
    )
    fake.chmod(0o755)
    backend = RbdBackend(qemu_img=str(fake))
    vol = rbd_volume(ceph_cluster, image)
    with pytest.raises(StorageError, match="connection reset") as info:
        await backend.create_from(vol, images["qcow2"], "qcow2")
    assert ceph_cluster.key not in str(info.value) + repr(info.value.context)
    assert image not in rbd_images(ceph_cluster)
    assert image + ".part" not in rbd_images(ceph_cluster)
