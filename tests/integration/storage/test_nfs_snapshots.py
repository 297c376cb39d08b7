"""Snapshot files of the NFS backend against nfs-ganesha, over QEMU's userspace client only:
overlays naming their backing by its ``nfs://`` URL (with the identity), safe
rebases that keep what a reader sees (checked with qemu-io over ``nfs://``), deletes,
idempotence and nothing left on failure; the files' sizes on the export (``allocated``)."""

from __future__ import annotations

import json
import subprocess

import pytest

from corral.agent.storage.backend import VolumeBackend
from corral.agent.storage.nfs import NfsBackend
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InvalidInput, StorageError
from tests.support.storage.nfs import NfsExport

pytestmark = pytest.mark.storage_servers

GIB = 1 << 30
MIB = 1 << 20


def vref(export: NfsExport, name: str = "v0") -> VolumeRef:
    pool = PoolRef(
        id="pool-nfs", type="nfs", settings={"server": export.host, "export": export.path}
    )
    return VolumeRef(volume_id="vol-1", pool=pool, name=name, size_gb=1)


def qemu_io(url: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, url], capture_output=True, text=True
    )


def write(url: str, pattern: int, offset: int) -> None:
    done = qemu_io(url, f"write -P {pattern:#x} {offset} {MIB}")
    assert done.returncode == 0, done.stderr


def reads(url: str, pattern: int, offset: int) -> bool:
    done = qemu_io(url, f"read -P {pattern:#x} {offset} {MIB}")
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


def local_info(export: NfsExport, name: str) -> dict[str, object]:
    path = export.local(f"corral-volumes/{name}")
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, object] = json.loads(out)
    return data


def names(export: NfsExport) -> list[str]:
    return sorted(p.name for p in export.local("corral-volumes").iterdir())


async def test_nfs_overlays_rebases_and_deletes(nfs_dir: NfsExport) -> None:
    backend = NfsBackend()
    checked: VolumeBackend = backend
    vol = vref(nfs_dir)
    await checked.create(vol)

    def url(name: str) -> str:
        return backend.url(vol.model_copy(update={"name": name}))

    write(url("v0"), 0x11, MIB)
    for _ in range(2):  # existing is success
        await checked.create_overlay(vol, "v1", "v0")
    info = local_info(nfs_dir, "v1")
    assert info["backing-filename"] == url("v0")  # relative names do not work over nfs://
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == GIB
    assert await checked.backing_of(vol, "v1") == "v0"
    assert await checked.backing_of(vol, "v0") is None
    write(url("v1"), 0x5A, 0)
    await checked.create_overlay(vol, "v2", "v1")
    write(url("v2"), 0x77, 2 * MIB)
    assert reads(url("v2"), 0x5A, 0) and reads(url("v2"), 0x11, MIB)
    # Sizes (qemu-img's actual-size over nfs://): each file's own clusters, not its chain's.
    v1 = await checked.allocated(vol, "v1")
    v2 = await checked.allocated(vol, "v2")
    assert isinstance(v1, int) and MIB <= v1 < 64 * MIB, v1
    assert isinstance(v2, int) and MIB <= v2 < 64 * MIB, v2
    assert v1 == nfs_dir.local("corral-volumes/v1").stat().st_blocks * 512
    assert await checked.allocated(vol, "absent") is None
    assert await checked.allocated(vol, "../v1") is None  # unsafe: no call, no error

    # Onto the grandparent: what v1 held is copied into v2.
    for _ in range(2):  # already there is success
        await checked.rebase(vol, "v2", "v0")
    assert await checked.backing_of(vol, "v2") == "v0"
    merged = await checked.allocated(vol, "v2")
    assert isinstance(merged, int) and merged >= v2 + MIB  # v1's MiB is in v2 now
    await checked.delete_file(vol, "v1")
    assert names(nfs_dir) == ["v0", "v2"]
    assert reads(url("v2"), 0x5A, 0)
    assert reads(url("v2"), 0x11, MIB)
    assert reads(url("v2"), 0x77, 2 * MIB)

    # Standalone: the base's data too.
    await checked.rebase(vol, "v2", None)
    assert await checked.backing_of(vol, "v2") is None
    for _ in range(2):
        await checked.delete_file(vol, "v0")
    assert names(nfs_dir) == ["v2"]
    assert reads(url("v2"), 0x11, MIB) and reads(url("v2"), 0x5A, 0)


async def test_nfs_overlay_failures_leave_nothing(nfs_dir: NfsExport) -> None:
    backend = NfsBackend()
    vol = vref(nfs_dir)
    await backend.create(vol)
    with pytest.raises(StorageError) as err:
        await backend.create_overlay(vol, "v1", "absent")
    assert err.value.context["reason"] == "not_found"
    with pytest.raises(InvalidInput):
        await backend.create_overlay(vol, "../v1", "v0")
    with pytest.raises(InvalidInput, match="qcow2"):
        await backend.create_overlay(vol.model_copy(update={"format": "raw"}), "v1", "v0")
    with pytest.raises(StorageError) as err:
        await backend.backing_of(vol, "absent")
    assert err.value.context["reason"] == "not_found"
    assert names(nfs_dir) == ["v0"]
