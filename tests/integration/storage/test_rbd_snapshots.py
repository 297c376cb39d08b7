"""Ceph's own snapshots of rbd volumes (``RbdBackend.snap_*``, ``rbd.snapshot`` tasks) against the
single-node Ceph cluster: data written through QEMU's rbd driver (``qemu-io``, the key in a
secret object) comes back after a rollback; creating twice and removing absent snapshots are
no-ops; protected snapshots are removed; ``delete`` takes the snapshots with the image; a
rollback is refused while a client has the image open (``rbd watch``, or ``qemu-nbd`` holding
the exclusive lock, where Ceph refuses by itself too), while creating and removing snapshots
works under such a client."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from corral.agent.executor import TaskExecutor, payload_key
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.backend import RbdSnapshots
from corral.agent.storage.dirpool import DirPool
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.rbd import RbdBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import PoolRef, RbdSnapshotTask, VolumeRef
from corral.api.errors import InjectedFault, InvalidInput, StorageError
from tests.integration.storage.test_volume_backends import images, rbd_volume, watch
from tests.integration.storage.test_volume_create_from import rbd_target
from tests.support.storage.ceph import CephCluster
from tests.unit.agent.fakes import FakeCompute
from tests.unit.storage.fakes import MemoryFetcher

pytestmark = pytest.mark.storage_servers

MIB = 1 << 20


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir()
    return path


@pytest.fixture
def rbd(keys: Path) -> RbdBackend:
    return RbdBackend(tmp_dir=keys)


@pytest.fixture
def secret(tmp_path: Path, ceph_cluster: CephCluster) -> Path:
    """The client's key in a file, for QEMU's secret object."""
    path = tmp_path / "secret"
    path.write_text(ceph_cluster.key)
    path.chmod(0o600)
    return path


@pytest.fixture
def image(ceph_cluster: CephCluster) -> Iterator[str]:
    name = f"vol-{uuid.uuid4().hex[:12]}"
    yield name
    if name in images(ceph_cluster):
        spec = f"{ceph_cluster.pool}/{name}"
        snaps = json.loads(ceph_cluster.rbd("snap", "ls", "--format", "json", spec))
        for snap in snaps:
            if snap["protected"] == "true":
                ceph_cluster.rbd("snap", "unprotect", f"{spec}@{snap['name']}")
        ceph_cluster.rbd("snap", "purge", "--no-progress", spec)
        ceph_cluster.rbd("rm", "--no-progress", spec)


def qemu_io(ceph: CephCluster, image: str, secret: Path, command: str) -> None:
    """Run one qemu-io command on the image through QEMU's rbd driver (as the pool's client)."""
    *opts, spec = rbd_target(ceph, image, secret)
    done = run("qemu-io", *opts, "-c", command, spec)
    assert done.returncode == 0, done.stderr
    assert "fail" not in done.stdout.lower(), done.stdout


def write(ceph: CephCluster, image: str, secret: Path, pattern: int) -> None:
    """``pattern`` over the first MiB and the MiB at 512 MiB."""
    for offset in ("0", "512M"):
        qemu_io(ceph, image, secret, f"write -P {pattern:#x} {offset} 1M")


def holds(
    ceph: CephCluster,
    image: str,
    secret: Path,
    pattern: int,
    offsets: tuple[str, ...] = ("0", "512M"),
) -> bool:
    """Whether the MiBs at ``offsets`` (by default both that ``write`` wrote) hold ``pattern``."""
    *opts, spec = rbd_target(ceph, image, secret)
    for offset in offsets:
        done = run("qemu-io", *opts, "-c", f"read -P {pattern:#x} {offset} 1M", spec)
        assert done.returncode == 0, done.stderr
        if "verification failed" in done.stdout:
            return False
    return True


def snaps(ceph: CephCluster, image: str) -> dict[str, bool]:
    """The image's snapshots as {name: protected} (as client.admin)."""
    out = ceph.rbd("snap", "ls", "--format", "json", f"{ceph.pool}/{image}")
    return {s["name"]: s["protected"] == "true" for s in json.loads(out)}


def no_secret(ceph: CephCluster, err: BaseException) -> None:
    assert isinstance(err, StorageError | InvalidInput)
    assert ceph.key not in str(err) + repr(err.context)


@contextmanager
def nbd_client(ceph: CephCluster, image: str, secret: Path, tmp_path: Path) -> Iterator[Path]:
    """``qemu-nbd`` serving the image (a QEMU client holding it open, as a running VM does);
    a write through it makes it take the image's exclusive lock. Yields the NBD socket."""
    sock = tmp_path / "nbd.sock"
    *opts, spec = rbd_target(ceph, image, secret)
    server = subprocess.Popen(
        ["qemu-nbd", *opts, "--persistent", "-k", str(sock), spec],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "qemu-nbd did not start"
            time.sleep(0.05)
        yield sock
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()


# --- RbdBackend ----------------------------------------------------------------------------


async def test_rollback_brings_the_snapshots_data_back(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, secret: Path, keys: Path
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    assert isinstance(rbd, RbdSnapshots)
    await rbd.create(vol)
    write(ceph_cluster, image, secret, 0xAA)
    await rbd.snap_create(vol, "s1")
    write(ceph_cluster, image, secret, 0xBB)
    await rbd.snap_create(vol, "s1")  # existing: kept as it is (the 0xaa data)
    await rbd.snap_create(vol, "s2")
    write(ceph_cluster, image, secret, 0xCC)
    assert snaps(ceph_cluster, image) == {"s1": False, "s2": False}

    await rbd.snap_rollback(vol, "s1")
    assert holds(ceph_cluster, image, secret, 0xAA)
    await rbd.snap_rollback(vol, "s1")  # again: the same
    assert holds(ceph_cluster, image, secret, 0xAA)
    await rbd.snap_rollback(vol, "s2")  # the newer snapshot is kept by a rollback
    assert holds(ceph_cluster, image, secret, 0xBB)
    assert snaps(ceph_cluster, image) == {"s1": False, "s2": False}
    assert list(keys.iterdir()) == []  # every keyfile is gone


async def test_sizes_of_snapshots_and_of_the_image(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, secret: Path, keys: Path
) -> None:
    """``snap_allocated``: what each snapshot took (``rbd du``), data written before it since
    the snapshot before; ``allocated``: the image's head. Failures are None, never errors."""
    vol = rbd_volume(ceph_cluster, image)
    assert await rbd.snap_allocated(vol, "s1") is None  # no image
    assert await rbd.allocated(vol, image) is None
    await rbd.create(vol)
    write(ceph_cluster, image, secret, 0xAA)  # 2 MiB, in two objects
    await rbd.snap_create(vol, "s1")
    await rbd.snap_create(vol, "s2")  # nothing written in between
    qemu_io(ceph_cluster, image, secret, "write -P 0x55 0 1M")
    s1 = await rbd.snap_allocated(vol, "s1")
    s2 = await rbd.snap_allocated(vol, "s2")
    head = await rbd.allocated(vol, image)
    assert isinstance(s1, int) and 2 * MIB <= s1 < 64 * MIB, s1
    assert s2 == 0
    assert isinstance(head, int) and MIB <= head < 64 * MIB, head
    du = json.loads(ceph_cluster.rbd("du", "--format", "json", f"{ceph_cluster.pool}/{image}"))
    assert {e.get("snapshot"): e["used_size"] for e in du["images"]} == {
        "s1": s1,
        "s2": s2,
        None: head,
    }
    assert await rbd.snap_sizes(vol) == {"s1": s1, "s2": s2}
    await rbd.snap_remove(vol, "s1")  # Ceph counts its data in the next snapshot now
    assert await rbd.snap_allocated(vol, "s2") == s1
    assert await rbd.snap_sizes(vol) == {"s2": s1}
    assert await rbd.snap_allocated(vol, "s1") is None
    assert await rbd.snap_allocated(vol, "a@b") is None  # an unsafe name: no call, no error
    assert list(keys.iterdir()) == []


async def test_missing_snapshots_and_images(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, keys: Path
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    for call in (rbd.snap_rollback(vol, "s1"), rbd.snap_create(vol, "s1")):  # no image
        with pytest.raises(StorageError) as absent:
            await call
        assert absent.value.context["reason"] == "not_found"
        assert absent.value.context["snap"] == "s1"
        assert (absent.value.context["pool_id"], absent.value.context["volume_id"]) == (
            "pool-ceph",
            image,
        )
        no_secret(ceph_cluster, absent.value)
    await rbd.snap_remove(vol, "s1")  # no image: success

    await rbd.create(vol)
    with pytest.raises(StorageError) as err:
        await rbd.snap_rollback(vol, "nope")
    assert err.value.context["reason"] == "not_found"
    assert f"{image}@nope does not exist" in err.value.message
    assert err.value.message.startswith(f"cannot roll back volume {image}:")
    no_secret(ceph_cluster, err.value)
    await rbd.snap_remove(vol, "nope")  # no snapshot: success
    assert snaps(ceph_cluster, image) == {}
    assert list(keys.iterdir()) == []


@pytest.mark.parametrize("name", ["", "a@b", "a/b", "s 1", "-" * 65, "x;rm", "é"])
async def test_snapshot_names_are_checked_before_any_call(
    ceph_cluster: CephCluster, keys: Path, image: str, name: str
) -> None:
    backend = RbdBackend(tmp_dir=keys, rbd="/nonexistent/rbd")  # any call would fail
    vol = rbd_volume(ceph_cluster, image)
    for call in (
        backend.snap_create(vol, name),
        backend.snap_rollback(vol, name),
        backend.snap_remove(vol, name),
    ):
        with pytest.raises(InvalidInput) as err:
            await call
        assert err.value.context == {"pool_id": "pool-ceph", "volume_id": image, "snap": name}


async def test_remove_takes_protected_snapshots_too(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, secret: Path
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    write(ceph_cluster, image, secret, 0x11)
    for name in ("s1", "s2", "s3"):
        await rbd.snap_create(vol, name)
    ceph_cluster.rbd("snap", "protect", f"{ceph_cluster.pool}/{image}@s2")
    assert snaps(ceph_cluster, image) == {"s1": False, "s2": True, "s3": False}

    await rbd.snap_remove(vol, "s1")
    await rbd.snap_remove(vol, "s2")  # protected: unprotected first
    assert snaps(ceph_cluster, image) == {"s3": False}
    await rbd.snap_remove(vol, "s2")  # absent: success
    assert holds(ceph_cluster, image, secret, 0x11)  # the image's own data is untouched


async def test_a_snapshot_with_clones_is_kept(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    await rbd.snap_create(vol, "base")
    spec = f"{ceph_cluster.pool}/{image}"
    child = f"{image}-child"
    ceph_cluster.rbd("snap", "protect", f"{spec}@base")
    ceph_cluster.rbd("clone", f"{spec}@base", f"{ceph_cluster.pool}/{child}")
    try:
        with pytest.raises(StorageError) as err:
            await rbd.snap_remove(vol, "base")
        assert err.value.context["reason"] == "has_clones"
        with pytest.raises(StorageError) as deleting:
            await rbd.delete(vol)
        assert deleting.value.context["reason"] == "has_snapshots"
        assert snaps(ceph_cluster, image) == {"base": True}  # nothing removed
    finally:
        ceph_cluster.rbd("rm", "--no-progress", f"{ceph_cluster.pool}/{child}")
    await rbd.delete(vol)
    assert image not in images(ceph_cluster)


async def test_delete_removes_the_snapshots_with_the_image(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, keys: Path
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    await rbd.snap_create(vol, "s1")
    await rbd.snap_create(vol, "s2")
    ceph_cluster.rbd("snap", "protect", f"{ceph_cluster.pool}/{image}@s2")

    await rbd.delete(vol)
    assert image not in images(ceph_cluster)
    assert [i for i in images(ceph_cluster) if i.startswith(image)] == []
    await rbd.delete(vol)  # absent: success
    assert list(keys.iterdir()) == []


async def test_delete_of_an_open_image_keeps_its_snapshots(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    await rbd.snap_create(vol, "s1")
    watcher = watch(ceph_cluster, image)
    try:
        with pytest.raises(StorageError) as err:
            await rbd.delete(vol)
        assert err.value.context["reason"] == "in_use"
        assert snaps(ceph_cluster, image) == {"s1": False}
    finally:
        assert watcher.stdin is not None and watcher.stdout is not None
        watcher.stdin.close()  # rbd watch exits at the end of its input
        watcher.wait(timeout=30)
        watcher.stdout.close()
    await rbd.delete(vol)
    assert image not in images(ceph_cluster)


async def test_rollback_is_refused_while_a_client_has_the_image_open(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, secret: Path, tmp_path: Path
) -> None:
    """Ceph would roll back under a client that merely watches the image (``rbd watch``, or
    QEMU before its first write): the backend's own check refuses that."""
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    write(ceph_cluster, image, secret, 0xAA)
    await rbd.snap_create(vol, "s1")
    write(ceph_cluster, image, secret, 0xBB)

    watcher = watch(ceph_cluster, image)
    try:
        with pytest.raises(StorageError) as err:
            await rbd.snap_rollback(vol, "s1")
        assert err.value.context["reason"] == "in_use"
        assert err.value.context["watchers"] == 1
        assert err.value.context["snap"] == "s1"
    finally:
        assert watcher.stdin is not None and watcher.stdout is not None
        watcher.stdin.close()
        watcher.wait(timeout=30)
        watcher.stdout.close()
    assert holds(ceph_cluster, image, secret, 0xBB)  # not rolled back

    with nbd_client(ceph_cluster, image, secret, tmp_path):
        with pytest.raises(StorageError) as nbd_err:
            await rbd.snap_rollback(vol, "s1")
        assert nbd_err.value.context["reason"] == "in_use"
    assert holds(ceph_cluster, image, secret, 0xBB)

    await rbd.snap_rollback(vol, "s1")  # the client is gone
    assert holds(ceph_cluster, image, secret, 0xAA)


async def test_cephs_own_refusal_to_roll_back_is_in_use(
    ceph_cluster: CephCluster, keys: Path, image: str, secret: Path, tmp_path: Path
) -> None:
    """With the watcher check blinded (an ``rbd`` that reports no watchers), Ceph itself
    refuses (EROFS) while a QEMU client holds the image's exclusive lock."""
    blind = tmp_path / "rbd"
    blind.write_text(
        '#!/bin/sh\nfor a in "$@"; do [ "$a" = status ] && { echo \'{"watchers":[]}\'; exit 0; }'
        '; done\nexec rbd "$@"\n'
    )
    blind.chmod(0o755)
    backend = RbdBackend(tmp_dir=keys, rbd=str(blind))
    vol = rbd_volume(ceph_cluster, image)
    await backend.create(vol)
    write(ceph_cluster, image, secret, 0xAA)
    await backend.snap_create(vol, "s1")

    with nbd_client(ceph_cluster, image, secret, tmp_path) as sock:
        wrote = run(
            "qemu-io", "-f", "raw", "-c", "write -P 0xbb 0 1M", f"nbd+unix:///?socket={sock}"
        )
        assert wrote.returncode == 0, wrote.stderr  # qemu-nbd now holds the exclusive lock
        with pytest.raises(StorageError) as err:
            await backend.snap_rollback(vol, "s1")
        assert err.value.context["reason"] == "in_use"
        assert err.value.context["returncode"] == 30
        no_secret(ceph_cluster, err.value)
        await backend.snap_create(vol, "live")  # a snapshot works under a running client
        await backend.snap_remove(vol, "live")
    assert holds(ceph_cluster, image, secret, 0xBB, ("0",))  # not rolled back
    assert list(keys.iterdir()) == []


# --- through the executor ------------------------------------------------------------------


def executor(tmp_path: Path, backends: Backends, faults: FaultPlan | None = None) -> TaskExecutor:
    return TaskExecutor(
        compute=FakeCompute(),  # type: ignore[arg-type]
        volumes=DirPool(tmp_path / "agent-pool"),
        specs=SpecStore(tmp_path / "specs"),
        faults=faults or FaultPlan(),
        fetch=MemoryFetcher(),
        drift={},
        backends=backends,
    )


async def test_rbd_snapshot_tasks_run_through_the_executor(
    ceph_cluster: CephCluster, keys: Path, image: str, secret: Path, tmp_path: Path
) -> None:
    faults = FaultPlan()
    ex = executor(tmp_path, Backends({"rbd": RbdBackend(tmp_dir=keys)}), faults)
    vol = rbd_volume(ceph_cluster, image)
    await RbdBackend(tmp_dir=keys).create(vol)
    write(ceph_cluster, image, secret, 0xAA)

    create = RbdSnapshotTask(op="create", volume=vol, snap="snap-1")
    assert payload_key(create) == f"volume:{image}"
    made = await ex.run(create)
    assert set(made) == {"bytes"} and isinstance(made["bytes"], int) and made["bytes"] > 0
    assert await ex.run(create) == made  # existing: success, the same size
    write(ceph_cluster, image, secret, 0xBB)
    assert await ex.run(RbdSnapshotTask(op="rollback", volume=vol, snap="snap-1")) == {}
    assert holds(ceph_cluster, image, secret, 0xAA)

    faults.fail_next("agent.rbd.snapshot")
    remove = RbdSnapshotTask(op="remove", volume=vol, snap="snap-1")
    with pytest.raises(InjectedFault):
        await ex.run(remove)
    assert snaps(ceph_cluster, image) == {"snap-1": False}  # the fault came first
    assert await ex.run(remove) == {"sizes": {}}  # no snapshot left
    assert await ex.run(remove) == {"sizes": {}}  # absent: success
    assert snaps(ceph_cluster, image) == {}

    with pytest.raises(StorageError) as err:
        await ex.run(RbdSnapshotTask(op="rollback", volume=vol, snap="snap-1"))
    assert err.value.context["reason"] == "not_found"
    assert list(keys.iterdir()) == []


async def test_rbd_snapshot_tasks_need_a_backend_with_ceph_snapshots(tmp_path: Path) -> None:
    ex = executor(tmp_path, Backends({"local": LocalBackend()}))
    pool = PoolRef(id="pool-loc", type="local", settings={"path": str(tmp_path / "loc")})
    vol = VolumeRef(volume_id="vol-1", pool=pool, name="vol-1.qcow2", size_gb=1)
    with pytest.raises(InvalidInput) as err:
        await ex.run(RbdSnapshotTask(op="create", volume=vol, snap="s1"))
    assert err.value.message == "snapshots of local volumes are not Ceph snapshots"
    assert err.value.context["volume_id"] == "vol-1"
    assert not (tmp_path / "loc").exists()


async def test_clone_is_a_copy_on_write_image_that_holds_its_snapshot(
    ceph_cluster: CephCluster, rbd: RbdBackend, image: str, secret: Path
) -> None:
    vol = rbd_volume(ceph_cluster, image)
    await rbd.create(vol)
    write(ceph_cluster, image, secret, 0xAA)
    await rbd.snap_create(vol, "gold")
    write(ceph_cluster, image, secret, 0xBB)  # the source goes on; the clone sees "gold"
    clone_name = f"{image}-clone"
    target = rbd_volume(ceph_cluster, clone_name).model_copy(update={"size_gb": 2})
    try:
        await rbd.snap_clone(vol, "gold", target)
        await rbd.snap_clone(vol, "gold", target)  # existing: kept
        assert holds(ceph_cluster, clone_name, secret, 0xAA)
        info = json.loads(
            ceph_cluster.rbd("info", "--format", "json", f"{ceph_cluster.pool}/{clone_name}")
        )
        assert info["size"] == 2 << 30 and info["parent"]["snapshot"] == "gold"
        assert snaps(ceph_cluster, image) == {"gold": True}  # protected for its clone
        with pytest.raises(StorageError) as held:
            await rbd.snap_remove(vol, "gold")
        assert held.value.context["reason"] == "has_clones"
        with pytest.raises(StorageError) as missing:
            await rbd.snap_clone(vol, "nope", target.model_copy(update={"name": f"{image}-x"}))
        assert missing.value.context["reason"] == "not_found"
    finally:
        await rbd.delete(target)
    await rbd.snap_remove(vol, "gold")  # free once the clone is gone
    assert snaps(ceph_cluster, image) == {}
