"""Volumes made from an image through the pool's own copy of it (``create_on_image``), with the
real tools: on a local pool, qcow2 overlays on ``<pool>/images/<id>.qcow2`` (stored once,
relative backing names); on NFS (ganesha), overlays on ``corral-image-<id>.qcow2`` named by its
URL; on Ceph, copy-on-write clones of ``corral-image-<id>@base``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from corral.agent.storage.local import LocalBackend
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.api.agent import PoolRef, VolumeRef
from tests.integration.storage.test_volume_create_from import (
    compare,
    images,  # noqa: F401 (fixture)
    nfs_volume,
    rbd_images,
    rbd_target,
    rbd_volume,
    run,
)
from tests.support.storage.ceph import CephCluster
from tests.support.storage.nfs import NfsExport

GIB = 1 << 30


def local_volume(root: Path, name: str, fmt: str = "qcow2", size_gb: int = 1) -> VolumeRef:
    pool = PoolRef(id="pool-local", type="local", settings={"path": str(root)})
    return VolumeRef(volume_id=name, pool=pool, name=name, size_gb=size_gb, format=fmt)


async def test_local_volumes_share_the_pools_copy_of_the_image(
    tmp_path: Path,
    images: dict[str, Path],  # noqa: F811
) -> None:
    backend = LocalBackend()
    root = tmp_path / "pool"
    a, b = local_volume(root, "a.qcow2"), local_volume(root, "b.qcow2", size_gb=2)
    for vol in (a, b):
        await backend.create_on_image(vol, "img-1", images["qcow2"], "qcow2")
    assert sorted(p.name for p in (root / "images").iterdir()) == ["img-1.qcow2"]  # once
    for vol, size in ((a, GIB), (b, 2 * GIB)):
        path = root / "volumes" / vol.name
        info = json.loads(run("qemu-img", "info", "--output=json", str(path)).stdout)
        assert info["backing-filename"] == "../images/img-1.qcow2"  # relative: the pool moves
        assert info["virtual-size"] == size
        assert compare(images["raw"], "-F", "qcow2", str(path)).returncode == 0
    await backend.create_on_image(a, "img-1", images["qcow2"], "qcow2")  # existing: kept
    raw = local_volume(root, "c.raw", fmt="raw")  # a raw (shareable) volume: a full copy
    await backend.create_on_image(raw, "img-1", images["qcow2"], "qcow2")
    assert "backing-filename" not in run("qemu-img", "info", str(root / "volumes/c.raw")).stdout
    await backend.delete(a)
    assert (root / "images" / "img-1.qcow2").is_file()  # the base stays for the others


@pytest.mark.storage_servers
async def test_rbd_volumes_are_clones_of_one_base_image(
    ceph_cluster: CephCluster,
    images: dict[str, Path],  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    backend = RbdBackend()
    image_id = uuid.uuid4().hex[:12]
    names = [f"vol-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    base = f"corral-image-{image_id}"
    secret = tmp_path / "key"
    secret.write_text(ceph_cluster.key)
    try:
        for name in names:
            vol = rbd_volume(ceph_cluster, name, size_gb=2)
            await backend.create_on_image(vol, image_id, images["qcow2"], "qcow2")
        assert rbd_images(ceph_cluster).count(base) == 1
        for name in names:
            info = json.loads(
                ceph_cluster.rbd("info", "--format", "json", f"{ceph_cluster.pool}/{name}")
            )
            assert info["parent"]["image"] == base and info["parent"]["snapshot"] == "base"
            assert info["size"] == 2 * GIB
            target = rbd_target(ceph_cluster, name, secret)
            done = run(
                "qemu-img", "compare", "-f", "raw", target[0], target[1], str(images["raw"]),
                target[2],
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        for name in names:
            await backend.delete(rbd_volume(ceph_cluster, name))
        spec = f"{ceph_cluster.pool}/{base}"
        if base in rbd_images(ceph_cluster):
            ceph_cluster.rbd("snap", "unprotect", f"{spec}@base")
            ceph_cluster.rbd("snap", "purge", "--no-progress", spec)
            ceph_cluster.rbd("rm", "--no-progress", spec)


@pytest.mark.storage_servers
async def test_nfs_volumes_share_the_pools_copy_of_the_image(
    nfs_dir: NfsExport,
    images: dict[str, Path],  # noqa: F811 (the fixture)
) -> None:
    backend = NfsBackend()
    vols = [nfs_volume(nfs_dir, "qcow2", size_gb=n) for n in (1, 2)]
    for vol in vols:
        await backend.create_on_image(vol, "img-9", images["raw"], "raw")
    files = sorted(p.name for p in nfs_dir.local("corral-volumes").iterdir())
    assert files.count("corral-image-img-9.qcow2") == 1 and len(files) == 3
    for vol, size in zip(vols, (GIB, 2 * GIB), strict=True):
        url = backend.url(vol)
        info = json.loads(run("qemu-img", "info", "--output=json", url).stdout)
        assert info["virtual-size"] == size
        assert "corral-image-img-9.qcow2" in info["backing-filename"]
        assert compare(images["raw"], "-F", "qcow2", url).returncode == 0
    await backend.create_on_image(vols[0], "img-9", images["raw"], "raw")  # existing: kept


async def test_local_forget_image_removes_the_pools_copy(
    tmp_path: Path,
    images: dict[str, Path],  # noqa: F811 (the fixture)
) -> None:
    backend = LocalBackend()
    root = tmp_path / "pool"
    vol = local_volume(root, "a.qcow2")
    await backend.create_on_image(vol, "img-2", images["qcow2"], "qcow2")
    await backend.delete(vol)
    await backend.forget_image(vol.pool, "img-2")
    assert list((root / "images").iterdir()) == []
    await backend.forget_image(vol.pool, "img-2")  # absent: success


@pytest.mark.storage_servers
async def test_rbd_forget_image_waits_for_its_clones(
    ceph_cluster: CephCluster,
    images: dict[str, Path],  # noqa: F811 (the fixture)
) -> None:
    from corral.api.errors import StorageError

    backend = RbdBackend()
    image_id = uuid.uuid4().hex[:12]
    vol = rbd_volume(ceph_cluster, f"vol-{uuid.uuid4().hex[:8]}")
    await backend.create_on_image(vol, image_id, images["qcow2"], "qcow2")
    with pytest.raises(StorageError) as held:
        await backend.forget_image(vol.pool, image_id)
    assert held.value.context["reason"] == "has_clones"
    await backend.delete(vol)
    await backend.forget_image(vol.pool, image_id)
    assert f"corral-image-{image_id}" not in rbd_images(ceph_cluster)
    await backend.forget_image(vol.pool, image_id)  # absent: success
