"""Snapshot files of the backends: LocalBackend with the real qemu-img and qemu-io on tmp_path
(overlays with relative backing names, safe rebases that keep what a reader sees, deletes,
idempotence, nothing left on failure), the simulated backend's bookkeeping and RBD's refusal."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from corral.agent.faults import FaultPlan
from corral.agent.storage.backend import VolumeBackend
from corral.agent.storage.common import name_in_dir
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.rbd import RbdBackend
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InjectedFault, InvalidInput, StorageError

GIB = 1 << 30
MIB = 1 << 20


def info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, object] = json.loads(out)
    return data


def qemu_io(path: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run one qemu-io command on ``path`` (qcow2, its chain opened as qemu-img would)."""
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True
    )


def reads(path: Path, pattern: int, offset: int, length: int = MIB) -> bool:
    """Whether ``path`` reads ``pattern`` bytes over the range (qemu-io's ``read -P``)."""
    done = qemu_io(path, f"read -P {pattern:#x} {offset} {length}")
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def write(path: Path, pattern: int, offset: int, length: int = MIB) -> None:
    done = qemu_io(path, f"write -P {pattern:#x} {offset} {length}")
    assert done.returncode == 0, done.stderr


def overlay(path: Path, *, backing: str) -> None:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, str(path)]
    subprocess.run(cmd, check=True)


def open_in_qemu(path: Path) -> subprocess.Popen[bytes]:
    """A QEMU (no machine, stopped) holding ``path`` open read-write, as a running VM would."""
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


def vref(root: Path, name: str = "v0", size_gb: int = 1) -> VolumeRef:
    pool = PoolRef(id="pool-1", type="local", settings={"path": str(root)})
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=size_gb)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "pool"


@pytest.fixture
def backend() -> LocalBackend:
    return LocalBackend()


def files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "volumes").iterdir())


async def test_overlays_name_their_backing_relatively(backend: LocalBackend, root: Path) -> None:
    checked: VolumeBackend = backend
    vol = vref(root, size_gb=2)
    await checked.create(vol)
    for _ in range(2):  # existing is success
        await checked.create_overlay(vol, "v1", "v0")
    v1 = root / "volumes" / "v1"
    data = info(v1)
    assert data["format"] == "qcow2"
    assert data["backing-filename"] == "v0"  # relative: the pool may be mounted elsewhere
    assert data["backing-filename-format"] == "qcow2"
    assert data["virtual-size"] == 2 * GIB
    assert oct(v1.stat().st_mode & 0o777) == "0o600"
    assert await checked.backing_of(vol, "v1") == "v0"
    assert await checked.backing_of(vol, "v0") is None
    assert files(root) == ["v0", "v1"]

    # The pool moves: the chain still resolves.
    moved = root.parent / "moved"
    root.rename(moved)
    assert info(moved / "volumes" / "v1")["full-backing-filename"] == str(moved / "volumes/v0")


async def test_an_existing_overlay_is_kept_as_it_is(backend: LocalBackend, root: Path) -> None:
    vol = vref(root)
    await backend.create(vol)
    await backend.create_overlay(vol, "v1", "v0")
    write(root / "volumes" / "v1", 0x11, 0)
    await backend.create_overlay(vol, "v1", "v0")
    assert reads(root / "volumes" / "v1", 0x11, 0)


async def test_overlay_of_a_missing_backing_fails_and_leaves_nothing(
    backend: LocalBackend, root: Path
) -> None:
    vol = vref(root)
    await backend.create(vol)
    with pytest.raises(StorageError) as err:
        await backend.create_overlay(vol, "v1", "nope")
    assert err.value.context["reason"] == "not_found"
    assert err.value.context["volume_id"] == "vol-1"
    assert files(root) == ["v0"]


async def test_a_failing_qemu_img_leaves_no_part_file(root: Path, tmp_path: Path) -> None:
    fake = tmp_path / "qemu-img"
    fake.write_text('#!/bin/sh\nfor a; do last="$a"; done\n: > "$last"\necho boom >&2\nexit 1\n')
    fake.chmod(0o755)
    await LocalBackend().create(vref(root))
    with pytest.raises(StorageError, match="boom"):
        await LocalBackend(qemu_img=str(fake)).create_overlay(vref(root), "v1", "v0")
    assert files(root) == ["v0"]


async def test_rebase_onto_the_grandparent_keeps_what_the_child_reads(
    backend: LocalBackend, root: Path
) -> None:
    """v0 <- v1 <- v2: v1 holds 0x5a at 0; rebasing v2 onto v0 copies it into v2."""
    vol = vref(root)
    await backend.create(vol)
    d = root / "volumes"
    write(d / "v0", 0x11, MIB)  # in the base: stays readable through the base
    await backend.create_overlay(vol, "v1", "v0")
    write(d / "v1", 0x5A, 0)
    await backend.create_overlay(vol, "v2", "v1")
    write(d / "v2", 0x77, 2 * MIB)
    before = (d / "v2").stat().st_size

    await backend.rebase(vol, "v2", "v0")
    assert await backend.backing_of(vol, "v2") == "v0"
    assert info(d / "v2")["backing-filename"] == "v0"
    (d / "v1").unlink()  # the merged layer is gone: v2 must not need it
    assert reads(d / "v2", 0x5A, 0)
    assert reads(d / "v2", 0x11, MIB)
    assert reads(d / "v2", 0x77, 2 * MIB)
    assert (d / "v2").stat().st_size > before  # the data was copied in
    await backend.rebase(vol, "v2", "v0")  # already there: success


async def test_rebase_to_standalone_and_back_onto_a_sibling(
    backend: LocalBackend, root: Path
) -> None:
    vol = vref(root)
    await backend.create(vol)
    d = root / "volumes"
    write(d / "v0", 0x5A, 0)
    await backend.create_overlay(vol, "v1", "v0")
    write(d / "v1", 0x6B, MIB)
    await backend.rebase(vol, "v1", None)
    assert await backend.backing_of(vol, "v1") is None
    assert "backing-filename" not in info(d / "v1")
    (d / "v0").rename(d / "gone")
    assert reads(d / "v1", 0x5A, 0) and reads(d / "v1", 0x6B, MIB)
    (d / "gone").rename(d / "v0")
    await backend.rebase(vol, "v1", None)  # standalone already: success

    # Onto a file with some of the data: only the difference stays in v1.
    await backend.rebase(vol, "v1", "v0")
    assert await backend.backing_of(vol, "v1") == "v0"
    assert reads(d / "v1", 0x5A, 0) and reads(d / "v1", 0x6B, MIB)


async def test_rebase_of_an_open_file_fails(backend: LocalBackend, root: Path) -> None:
    """qemu-img takes the image's write lock: a file QEMU has open cannot be rebased."""
    vol = vref(root)
    await backend.create(vol)
    await backend.create_overlay(vol, "v1", "v0")
    path = root / "volumes" / "v1"
    holder = open_in_qemu(path)
    try:
        deadline = time.monotonic() + 10
        while qemu_io(path, "read 0 512").returncode == 0:  # until QEMU holds the lock
            assert holder.poll() is None, "QEMU exited"
            assert time.monotonic() < deadline, "QEMU did not lock the image"
            await asyncio.sleep(0.05)
        with pytest.raises(StorageError, match="lock"):
            await backend.rebase(vol, "v1", None)
    finally:
        holder.kill()
        holder.wait()
    assert await backend.backing_of(vol, "v1") == "v0"


async def test_delete_file_is_idempotent_and_names_are_checked(
    backend: LocalBackend, root: Path
) -> None:
    vol = vref(root)
    await backend.create(vol)
    await backend.create_overlay(vol, "v1", "v0")
    (root / "volumes" / "v2.part").write_bytes(b"x")  # left by a crash
    for _ in range(2):
        await backend.delete_file(vol, "v1")
        await backend.delete_file(vol, "v2")
    assert files(root) == ["v0"]
    for bad in ("../v0", "/etc/passwd", "a/b", ".hidden"):
        with pytest.raises(InvalidInput):
            await backend.create_overlay(vol, bad, "v0")
        with pytest.raises(InvalidInput):
            await backend.create_overlay(vol, "ok", bad)
        with pytest.raises(InvalidInput):
            await backend.rebase(vol, "v0", bad)
        with pytest.raises(InvalidInput):
            await backend.delete_file(vol, bad)
    with pytest.raises(StorageError) as err:
        await backend.backing_of(vol, "absent")
    assert err.value.context["reason"] == "not_found"


async def test_raw_volumes_have_no_snapshots(backend: LocalBackend, root: Path) -> None:
    vol = vref(root).model_copy(update={"format": "raw"})
    await backend.create(vol)
    with pytest.raises(InvalidInput, match="qcow2"):
        await backend.create_overlay(vol, "v1", "v0")
    assert files(root) == ["v0"]


async def test_backing_written_by_libvirt_as_an_absolute_path_is_a_name(
    backend: LocalBackend, root: Path
) -> None:
    vol = vref(root)
    await backend.create(vol)
    d = root / "volumes"
    overlay(d / "v1", backing=str(d / "v0"))
    assert await backend.backing_of(vol, "v1") == "v0"
    await backend.rebase(vol, "v1", "v0")  # recognised as already there
    assert info(d / "v1")["backing-filename"] == str(d / "v0")


def test_name_in_dir() -> None:
    assert name_in_dir(None, "/p") is None
    assert name_in_dir("v1", "/p") == "v1"
    assert name_in_dir("/p/v1", "/p") == "v1"
    assert name_in_dir("/p/v1", "/p/") == "v1"
    assert name_in_dir("/elsewhere/v1", "/p") == "/elsewhere/v1"
    assert name_in_dir("nfs://h/e/d/v1", "nfs://h/e/d") == "v1"


async def test_simulated_backend_records_the_files() -> None:
    faults = FaultPlan()
    sim = SimulatedBackend(host_name="h", faults=faults)
    vol = vref(Path("/x"))
    checked: VolumeBackend = sim
    await checked.create_overlay(vol, "v1", "v0")
    await checked.create_overlay(vol, "v1", "other")  # existing: kept
    await checked.create_overlay(vol, "v2", "v1")
    assert dict(sim.files("pool-1")) == {"v1": "v0", "v2": "v1"}
    await checked.rebase(vol, "v2", None)
    assert await checked.backing_of(vol, "v2") is None
    await checked.delete_file(vol, "v1")
    await checked.delete_file(vol, "v1")
    assert dict(sim.files("pool-1")) == {"v2": None}
    for op in ("volume.create_overlay", "volume.rebase", "volume.delete_file"):
        faults.fail_next(op)
    with pytest.raises(InjectedFault):
        await checked.create_overlay(vol, "v3", "v2")
    with pytest.raises(InjectedFault):
        await checked.rebase(vol, "v2", "v0")
    with pytest.raises(InjectedFault):
        await checked.delete_file(vol, "v2")
    assert dict(sim.files("pool-1")) == {"v2": None}


async def test_rbd_refuses_external_snapshots() -> None:
    pool = PoolRef(id="p", type="rbd", settings={"pool": "rbd", "monitors": ["m"]})
    vol = VolumeRef(volume_id="v", pool=pool, name="img", size_gb=1, format="raw")
    rbd: VolumeBackend = RbdBackend()
    for call in (
        rbd.create_overlay(vol, "a", "img"),
        rbd.rebase(vol, "a", None),
        rbd.delete_file(vol, "a"),
        rbd.backing_of(vol, "a"),
    ):
        with pytest.raises(InvalidInput, match="rbd volumes have Ceph snapshots"):
            await call
