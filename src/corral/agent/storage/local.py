"""Data volumes of ``local`` pools: image files in a directory of the host.

Layout: ``<settings.path>/volumes/<VolumeRef.name>`` (``vol-<id>.qcow2``, format
``VolumeRef.format``). Directories are created 0755 (QEMU, user libvirt-qemu, must traverse
them), files are 0600 (libvirt's dynamic ownership hands them to QEMU while a VM runs). A file
appears under its final name only when complete: it is made as ``<name>.part`` and renamed, so an
existing volume file is always a good one and a failed call leaves nothing.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from corral.agent.storage.backend import DiskSource, PoolUsage
from corral.agent.storage.common import (
    GIB,
    PART_SUFFIX,
    KeyedLocks,
    pool_settings,
    safe_name,
    volume_error,
)
from corral.agent.storage.dirpool import _mkdir, _publish
from corral.agent.storage.qemu_img import QEMU_IMG, image_info, run_qemu_img
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import StorageError
from corral.api.storage import LocalSettings

VOLUMES_DIR = "volumes"


class LocalBackend:
    """A ``VolumeBackend`` for ``local`` pools (see the module docstring). One event loop only:
    calls for one volume are serialized with ``asyncio`` locks."""

    def __init__(self, *, qemu_img: str = QEMU_IMG) -> None:
        self.qemu_img = qemu_img
        self._locks = KeyedLocks()

    def path(self, volume: VolumeRef) -> Path:
        """The volume's file; ``InvalidInput`` for unusable settings or an unsafe name."""
        root = Path(pool_settings(volume.pool, LocalSettings).path)
        return root / VOLUMES_DIR / safe_name(volume)

    async def create(self, volume: VolumeRef) -> None:
        """Make the file (thin) unless it exists: an existing file is kept as it is."""
        path = self.path(volume)
        part = path.with_name(path.name + PART_SUFFIX)
        async with self._locks.hold(str(path)):
            if await asyncio.to_thread(path.is_file):
                return
            try:
                await asyncio.to_thread(_mkdir, path.parent)
                await run_qemu_img(
                    *("create", "-q", "-f", volume.format, str(part)),
                    str(volume.size_gb * GIB),
                    qemu_img=self.qemu_img,
                )
                await asyncio.to_thread(_publish, part, path, 0o600)
            except BaseException as exc:
                part.unlink(missing_ok=True)  # inline: survives cancellation
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def delete(self, volume: VolumeRef) -> None:
        """Remove the file (and a ``.part`` left by a crash); absent is success."""
        path = self.path(volume)
        async with self._locks.hold(str(path)):
            try:
                for p in (path, path.with_name(path.name + PART_SUFFIX)):
                    await asyncio.to_thread(p.unlink, missing_ok=True)
            except OSError as exc:
                raise volume_error("delete", volume, exc) from exc

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """Grow the file's virtual size to ``size_gb``; already that size or larger: nothing.
        ``StorageError`` (context ``reason="not_found"``) if the volume does not exist."""
        path = self.path(volume)
        async with self._locks.hold(str(path)):
            try:
                if not await asyncio.to_thread(path.is_file):
                    raise StorageError(
                        f"volume {volume.volume_id} does not exist", reason="not_found"
                    )
                info = await image_info(path, volume.format, qemu_img=self.qemu_img)
                if info.virtual_size >= size_gb * GIB:
                    return
                await run_qemu_img(
                    *("resize", "-q", "-f", volume.format, str(path), str(size_gb * GIB)),
                    qemu_img=self.qemu_img,
                )
            except Exception as exc:
                raise volume_error("resize", volume, exc) from exc

    def source(self, volume: VolumeRef) -> DiskSource:
        return DiskSource(kind="file", path=str(self.path(volume)), format=volume.format)

    async def usage(self, pool: PoolRef) -> PoolUsage:
        """Total and available space of the file system holding the pool's directory (of its
        nearest existing ancestor before the first volume is made)."""
        root = Path(pool_settings(pool, LocalSettings).path)
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, _existing_ancestor(root))
        except OSError as exc:
            raise StorageError(
                f"cannot stat pool {pool.id} at {root}: {exc}", pool_id=pool.id, path=str(root)
            ) from exc
        return PoolUsage(total_gb=usage.total / GIB, free_gb=usage.free / GIB)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
