"""The NFS and RBD volume backends against real servers (nfs-ganesha, single-node Ceph), and QEMU
opening the ``DiskSource`` they return the way libvirt hands it over (``json:`` block options)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.storage.backend import DiskAuth, DiskSource
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import StorageError
from tests.support.storage.ceph import CephCluster, new_key
from tests.support.storage.nfs import NfsExport

pytestmark = pytest.mark.storage_servers

GIB = 1 << 30
QEMU_UID = 64055  # libvirt-qemu on Debian


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def qemu_info(*argv: str) -> dict[str, object]:
    done = run("qemu-img", "info", "--output=json", *argv)
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


# --- NFS -----------------------------------------------------------------------------------


def nfs_volume(export: NfsExport, name: str = "vol-1.qcow2", size_gb: int = 2) -> VolumeRef:
    pool = PoolRef(
        id="pool-nfs", type="nfs", settings={"server": export.host, "export": export.path}
    )
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=size_gb)


def nfs_json(source: DiskSource, uid: int = 0) -> str:
    """What libvirt 9.0 gives QEMU for ``<source protocol='nfs' name=…><host name=…/>
    <identity user=… group=…/>`` (see ``virsh domxml-to-native``)."""
    ((host, _port),) = source.hosts
    proto: dict[str, object] = {"driver": "nfs", "path": source.name}
    proto |= {"server": {"type": "inet", "host": host}, "user": uid, "group": uid}
    return "json:" + json.dumps({"driver": source.format, "file": proto})


async def test_nfs_volume_lifecycle(nfs_dir: NfsExport) -> None:
    backend, vol = NfsBackend(), nfs_volume(nfs_dir)
    await backend.create(vol)
    local = nfs_dir.local("corral-volumes/vol-1.qcow2")
    assert sorted(p.name for p in local.parent.iterdir()) == ["vol-1.qcow2"]  # no .part
    assert local.stat().st_mode & 0o777 == 0o600

    source = backend.source(vol)
    assert source == DiskSource(
        kind="network",
        protocol="nfs",
        name=f"{nfs_dir.path}/corral-volumes/vol-1.qcow2",
        hosts=(("127.0.0.1", 2049),),
        format="qcow2",
    )
    url = f"nfs://{nfs_dir.host}{source.name}"
    assert qemu_info(url)["virtual-size"] == 2 * GIB
    assert qemu_info(nfs_json(source))["virtual-size"] == 2 * GIB

    await backend.resize(vol, 3)
    assert qemu_info(url)["virtual-size"] == 3 * GIB
    await backend.resize(vol, 1)  # smaller: nothing
    assert qemu_info(url)["virtual-size"] == 3 * GIB

    await backend.delete(vol)
    assert not local.exists()
    assert run("qemu-img", "info", url).returncode != 0
    await backend.delete(vol)  # absent: success


async def test_nfs_create_keeps_an_existing_volume(nfs_dir: NfsExport) -> None:
    backend = NfsBackend()
    await backend.create(nfs_volume(nfs_dir))
    url = backend.url(nfs_volume(nfs_dir))
    wrote = run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", url)
    assert wrote.returncode == 0, wrote.stderr
    await backend.create(nfs_volume(nfs_dir, size_gb=7))
    assert qemu_info(url)["virtual-size"] == 2 * GIB
    read = run("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", url)
    assert read.returncode == 0 and "verification failed" not in read.stdout


async def test_qemu_needs_the_agents_nfs_identity(nfs_dir: NfsExport) -> None:
    """Why the domain XML needs ``<identity user='root' group='root'/>``: QEMU's default uid
    (libvirt-qemu) is refused the 0600 file."""
    backend, vol = NfsBackend(), nfs_volume(nfs_dir)
    await backend.create(vol)
    denied = run("qemu-img", "info", nfs_json(backend.source(vol), uid=QEMU_UID))
    assert denied.returncode != 0
    assert "ACCESS denied" in denied.stderr


async def test_nfs_failed_create_leaves_nothing(nfs_dir: NfsExport, tmp_path: Path) -> None:
    fake = tmp_path / "qemu-img"  # the real one makes the file, then "fails"
    fake.write_text('#!/bin/sh\nqemu-img "$@" || exit 3\necho "disk quota exceeded" >&2\nexit 1\n')
    fake.chmod(0o755)
    backend = NfsBackend(qemu_img=str(fake))
    with pytest.raises(StorageError) as err:
        await backend.create(nfs_volume(nfs_dir))
    assert "disk quota exceeded" in err.value.message
    assert (err.value.context["pool_id"], err.value.context["volume_id"]) == ("pool-nfs", "vol-1")
    assert list(nfs_dir.local("corral-volumes").iterdir()) == []


async def test_nfs_cancelled_create_leaves_nothing(nfs_dir: NfsExport, tmp_path: Path) -> None:
    started = tmp_path / "started"
    os.mkfifo(started)
    fake = tmp_path / "qemu-img"  # makes the file, says so, then hangs
    fake.write_text(f'#!/bin/sh\nqemu-img "$@" || exit 3\necho made > {started}\nexec sleep 60\n')
    fake.chmod(0o755)
    task = asyncio.create_task(NfsBackend(qemu_img=str(fake)).create(nfs_volume(nfs_dir)))
    assert await asyncio.to_thread(started.read_text) == "made\n"
    assert [p.name for p in nfs_dir.local("corral-volumes").iterdir()] == ["vol-1.qcow2.part"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(nfs_dir.local("corral-volumes").iterdir()) == []


async def test_nfs_usage_is_the_exports(nfs_dir: NfsExport) -> None:
    usage = await NfsBackend().usage(nfs_volume(nfs_dir).pool)
    fs = os.statvfs(nfs_dir.directory)
    assert usage.total_gb == pytest.approx(fs.f_blocks * fs.f_frsize / GIB)
    assert usage.free_gb == pytest.approx(fs.f_bavail * fs.f_frsize / GIB, rel=0.01)


async def test_nfs_errors_name_the_pool(nfs_dir: NfsExport) -> None:
    missing = PoolRef(
        id="pool-x", type="nfs", settings={"server": nfs_dir.host, "export": "/no/such/export"}
    )
    vol = VolumeRef(volume_id="vol-9", pool=missing, name="vol-9.qcow2", size_gb=1)
    for call in (NfsBackend().create(vol), NfsBackend().delete(vol)):
        with pytest.raises(StorageError) as err:
            await call
        assert err.value.context["pool_id"] == "pool-x"
        assert err.value.context["volume_id"] == "vol-9"
        assert "/no/such/export" in err.value.message
    with pytest.raises(StorageError) as usage_err:
        await NfsBackend().usage(missing)
    assert usage_err.value.context["op"] == "mount"


# --- RBD -----------------------------------------------------------------------------------


def rbd_pool(ceph: CephCluster, key: str | None = None) -> PoolRef:
    return PoolRef(
        id="pool-ceph",
        type="rbd",
        settings={"monitors": [ceph.mon_host], "pool": ceph.pool, "user": ceph.client},
        credentials=key or ceph.key,
    )


def rbd_volume(ceph: CephCluster, name: str, size_gb: int = 1, key: str | None = None) -> VolumeRef:
    return VolumeRef(
        volume_id=name, pool=rbd_pool(ceph, key), name=name, size_gb=size_gb, format="raw"
    )


def rbd_size(ceph: CephCluster, name: str) -> int:
    return int(json.loads(ceph.rbd("info", f"{ceph.pool}/{name}", "--format", "json"))["size"])


def images(ceph: CephCluster) -> list[str]:
    return ceph.rbd("ls", ceph.pool).split()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir()
    return path


@pytest.fixture
def rbd(keys: Path) -> RbdBackend:
    return RbdBackend(tmp_dir=keys)


@pytest.fixture
def image(ceph_cluster: CephCluster) -> Iterator[str]:
    name = f"vol-{uuid.uuid4().hex[:12]}"
    yield name
    if name in images(ceph_cluster):
        ceph_cluster.rbd("snap", "purge", "--no-progress", f"{ceph_cluster.pool}/{name}")
        ceph_cluster.rbd("rm", "--no-progress", f"{ceph_cluster.pool}/{name}")


def rbd_json(source: DiskSource) -> str:
    """What libvirt 9.0 gives QEMU for an rbd ``<disk>`` with a ceph secret."""
    pool, image = source.name.split("/")
    servers = [{"host": h, "port": str(p)} for h, p in source.hosts]
    assert source.auth is not None
    proto: dict[str, object] = {"driver": "rbd", "pool": pool, "image": image}
    proto |= {"server": servers}
    proto |= {"user": source.auth.username, "auth-client-required": ["cephx", "none"]}
    proto |= {"key-secret": "sec0"}
    return "json:" + json.dumps({"driver": source.format, "file": proto})


async def test_rbd_volume_lifecycle(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, keys: Path, tmp_path: Path
) -> None:
    vol = rbd_volume(ceph_cluster, image, size_gb=1)
    await rbd.create(vol)
    assert rbd_size(ceph_cluster, image) == GIB
    await rbd.create(rbd_volume(ceph_cluster, image, size_gb=4))  # exists: kept
    assert rbd_size(ceph_cluster, image) == GIB

    source = rbd.source(vol)
    host, port = ceph_cluster.mon_host.split(":")
    assert source == DiskSource(
        kind="network",
        protocol="rbd",
        name=f"{ceph_cluster.pool}/{image}",
        hosts=((host, int(port)),),
        format="raw",
        auth=DiskAuth(
            type="ceph", username=ceph_cluster.client, secret=ceph_cluster.key, pool_id="pool-ceph"
        ),
    )
    assert ceph_cluster.key not in repr(source)
    secret = tmp_path / "secret"
    secret.write_text(source.auth.secret if source.auth else "")
    opened = qemu_info("--object", f"secret,id=sec0,file={secret},format=base64", rbd_json(source))
    assert opened["virtual-size"] == GIB

    await rbd.resize(vol, 3)
    assert rbd_size(ceph_cluster, image) == 3 * GIB
    await rbd.resize(vol, 2)  # smaller: nothing
    assert rbd_size(ceph_cluster, image) == 3 * GIB

    await rbd.delete(vol)
    assert image not in images(ceph_cluster)
    await rbd.delete(vol)  # absent: success
    assert list(keys.iterdir()) == []  # every keyfile is gone


async def test_rbd_resize_of_an_absent_image_fails(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str
) -> None:
    with pytest.raises(StorageError) as err:
        await rbd.resize(rbd_volume(ceph_cluster, image), 2)
    assert err.value.context["reason"] == "not_found"


def watch(ceph: CephCluster, image: str) -> subprocess.Popen[str]:
    """``rbd watch`` on the image (a client holding it open, as QEMU does), once the watch is
    set up (it says so on stdout); it exits when its stdin closes."""
    watcher = subprocess.Popen(
        ["rbd", "-c", str(ceph.conf), "watch", f"{ceph.pool}/{image}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert watcher.stdout is not None
    assert "press enter" in watcher.stdout.readline()
    return watcher


async def test_rbd_refuses_to_delete_an_open_image(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    watcher = watch(ceph_cluster, image)
    try:
        with pytest.raises(StorageError) as err:
            await rbd.delete(vol)
        assert err.value.context["reason"] == "in_use"
        assert image in images(ceph_cluster)
    finally:
        assert watcher.stdin is not None
        watcher.stdin.close()  # rbd watch exits at the end of its input
        watcher.wait(timeout=30)
        assert watcher.stdout is not None
        watcher.stdout.close()
    await rbd.delete(vol)
    assert image not in images(ceph_cluster)


async def test_rbd_delete_purges_the_images_snapshots(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    ceph_cluster.rbd("snap", "create", f"{ceph_cluster.pool}/{image}@keep")
    ceph_cluster.rbd("snap", "protect", f"{ceph_cluster.pool}/{image}@keep")
    await rbd.delete(vol)  # Ceph's snapshots go with the volume
    assert image not in images(ceph_cluster)


async def test_a_wrong_key_is_a_storage_error_without_the_key(
    ceph_cluster: CephCluster, keys: Path, image: str
) -> None:
    wrong = new_key()
    backend = RbdBackend(tmp_dir=keys, connect_timeout=1)
    vol = rbd_volume(ceph_cluster, image, key=wrong)
    for call in (backend.create(vol), backend.delete(vol), backend.usage(vol.pool)):
        with pytest.raises(StorageError) as err:
            await call
        shown = str(err.value) + repr(err.value.context)
        assert wrong not in shown and ceph_cluster.key not in shown
        assert err.value.context["reason"] in ("auth", "unreachable")
        assert err.value.context["pool_id"] == "pool-ceph"
    assert image not in images(ceph_cluster)
    assert list(keys.iterdir()) == []


async def test_rbd_usage_is_the_pools_share_of_the_cluster(
    ceph_cluster: CephCluster, rbd: RbdBackend
) -> None:
    # a new cluster's manager lists the pool in `ceph df` a few seconds after it was created
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            usage = await rbd.usage(rbd_pool(ceph_cluster))
            break
        except StorageError as exc:
            if exc.context.get("reason") != "not_found" or (
                asyncio.get_running_loop().time() > deadline
            ):
                raise
            await asyncio.sleep(0.5)
    df = json.loads(ceph_cluster.ceph("df", "-f", "json"))
    (stats,) = [p["stats"] for p in df["pools"] if p["name"] == ceph_cluster.pool]
    assert usage.free_gb == pytest.approx(stats["max_avail"] / GIB, rel=0.05)
    assert usage.total_gb >= usage.free_gb > 0
    assert usage.total_gb < df["stats"]["total_bytes"] / GIB
