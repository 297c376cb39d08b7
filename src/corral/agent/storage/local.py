"""Data volumes of ``local`` pools: image files in a directory of the host.

Layout: ``<settings.path>/volumes/<VolumeRef.name>`` (``vol-<id>.qcow2``, format
``VolumeRef.format``). Directories are created 0755 (QEMU, user libvirt-qemu, must traverse
them), files are 0600 (libvirt's dynamic ownership hands them to QEMU while a VM runs). A file
appears under its final name only when complete: it is made as ``<name>.part`` and renamed, so an
existing volume file is always a good one and a failed call leaves nothing.

Snapshots: every file of a volume (its active file, its snapshots) is in the same directory, a
qcow2 overlay names its backing relatively (``-b <name>``: qemu-img resolves it against the
overlay's directory, checked with QEMU 7.2); libvirt's own live snapshots and pulls write
absolute paths into the same directory, which ``backing_of`` reports as names too.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from corral.agent.storage.backend import (
    DiskSource,
    PoolUsage,
    check_fits,
    check_source_format,
    exported_file,
)
from corral.agent.storage.common import (
    GIB,
    PART_SUFFIX,
    KeyedLocks,
    file_ref,
    name_in_dir,
    pool_settings,
    safe_image_id,
    safe_name,
    volume_error,
)
from corral.agent.storage.dirpool import _mkdir, _publish, write_new
from corral.agent.storage.qemu_img import QEMU_IMG, copy_flags, image_info, run_qemu_img
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import CorralError, StorageError
from corral.api.storage import LocalSettings

log = logging.getLogger(__name__)

VOLUMES_DIR = "volumes"
IMAGES_DIR = "images"
"""Where the pool keeps its copies of the images volumes are overlays on (``create_on_image``)."""


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

    async def create_from(self, volume: VolumeRef, source: Path, source_format: str) -> None:
        """``qemu-img convert`` of ``source`` into ``<name>.part`` (``volume.format``), grown
        to ``volume.size_gb`` and renamed; an existing file is kept as it is."""
        fmt = check_source_format(volume, source_format)
        path = self.path(volume)
        part = path.with_name(path.name + PART_SUFFIX)
        async with self._locks.hold(str(path)):
            if await asyncio.to_thread(path.is_file):
                return
            try:
                info = await image_info(source, fmt, qemu_img=self.qemu_img)
                check_fits(volume, info.virtual_size)
                await asyncio.to_thread(_mkdir, path.parent)
                await run_qemu_img(
                    *("convert", "-q", "-f", fmt, "-O", volume.format, str(source), str(part)),
                    qemu_img=self.qemu_img,
                )
                if info.virtual_size < volume.size_gb * GIB:
                    await run_qemu_img(
                        *("resize", "-q", "-f", volume.format, str(part)),
                        str(volume.size_gb * GIB),
                        qemu_img=self.qemu_img,
                    )
                await asyncio.to_thread(_publish, part, path, 0o600)
            except BaseException as exc:
                part.unlink(missing_ok=True)  # inline: survives cancellation
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def create_on_image(
        self, volume: VolumeRef, image_id: str, source: Path, source_format: str
    ) -> None:
        """The volume as a qcow2 overlay (``volume.size_gb``) on the pool's own copy of the
        image, ``<pool>/images/<image_id>.<format>``: copied once per pool from ``source`` (the
        host's checked cache copy), 0644, never written again; however many volumes are made
        from the image, the pool holds it once. A raw volume (shareable) is a full copy
        (``create_from``). Existing volume: kept as it is. The overlay names its base by a
        relative path (the pool can be mounted elsewhere)."""
        if volume.format != "qcow2":
            await self.create_from(volume, source, source_format)
            return
        fmt = check_source_format(volume, source_format)
        path = self.path(volume)
        base = path.parent.parent / IMAGES_DIR / f"{safe_image_id(image_id)}.{fmt}"
        part = path.with_name(path.name + PART_SUFFIX)
        async with self._locks.hold(str(path)):
            if await asyncio.to_thread(path.is_file):
                return
            try:
                await self._pool_copy(base, source)
                info = await image_info(base, fmt, qemu_img=self.qemu_img)
                check_fits(volume, info.virtual_size)
                await asyncio.to_thread(_mkdir, path.parent)
                rel = f"../{IMAGES_DIR}/{base.name}"
                await run_qemu_img(
                    *("create", "-q", "-f", "qcow2", "-F", fmt, "-b", rel, str(part)),
                    str(volume.size_gb * GIB),
                    qemu_img=self.qemu_img,
                )
                await asyncio.to_thread(_publish, part, path, 0o600)
            except BaseException as exc:
                part.unlink(missing_ok=True)  # inline: survives cancellation
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def forget_image(self, pool: PoolRef, image_id: str) -> None:
        """Remove ``<pool>/images/<image_id>.*`` (the caller knows no volume is an overlay on
        it); absent: success."""
        root = Path(pool_settings(pool, LocalSettings).path) / IMAGES_DIR
        name = safe_image_id(image_id)
        for fmt in ("qcow2", "raw"):
            base = root / f"{name}.{fmt}"
            async with self._locks.hold(str(base)):
                try:
                    await asyncio.to_thread(base.unlink, missing_ok=True)
                except OSError as exc:
                    raise StorageError(
                        f"cannot remove the pool's copy of image {image_id}: {exc}",
                        pool_id=pool.id,
                        image_id=image_id,
                    ) from exc

    async def _pool_copy(self, base: Path, source: Path) -> None:
        """``base`` as a copy of ``source`` unless it is there (once per pool and image)."""
        async with self._locks.hold(str(base)):
            if await asyncio.to_thread(base.is_file):
                return
            await asyncio.to_thread(_mkdir, base.parent)

            async def copy(part: Path) -> None:
                await asyncio.to_thread(shutil.copyfile, source, part)

            await write_new(base, copy, mode=0o644)

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

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        """Make ``new_name``, an empty qcow2 overlay of ``backing_name`` (relative backing,
        the backing's virtual size), unless it exists. ``StorageError`` (``reason="not_found"``)
        if the backing file does not exist."""
        path = self.path(file_ref(volume, new_name))
        backing = self.path(file_ref(volume, backing_name))
        part = path.with_name(path.name + PART_SUFFIX)
        async with self._locks.hold(str(path)):
            if await asyncio.to_thread(path.is_file):
                return
            try:
                if not await asyncio.to_thread(backing.is_file):
                    raise StorageError(
                        f"backing file {backing_name} does not exist",
                        reason="not_found",
                        name=backing_name,
                    )
                await run_qemu_img(
                    *("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing.name),
                    str(part),
                    qemu_img=self.qemu_img,
                )
                await asyncio.to_thread(_publish, part, path, 0o600)
            except BaseException as exc:
                part.unlink(missing_ok=True)  # inline: survives cancellation
                if isinstance(exc, Exception):
                    raise volume_error("create an overlay of", volume, exc) from exc
                raise

    async def rebase(self, volume: VolumeRef, name: str, backing_name: str | None) -> None:
        """``qemu-img rebase`` (safe mode) of ``name`` onto ``backing_name`` (None:
        standalone); already there: nothing. qemu-img takes the file's write lock, so a file a
        running QEMU has open fails (``StorageError``)."""
        path = self.path(file_ref(volume, name))
        if backing_name is not None:
            self.path(file_ref(volume, backing_name))  # InvalidInput for an unsafe name
        async with self._locks.hold(str(path)):
            try:
                if await self._backing(volume, path) == backing_name:
                    return
                args = ["rebase", "-q", "-f", "qcow2", "-b", backing_name or ""]
                if backing_name is not None:
                    args += ["-F", "qcow2"]
                await run_qemu_img(*args, str(path), qemu_img=self.qemu_img)
            except Exception as exc:
                raise volume_error("rebase", volume, exc) from exc

    async def delete_file(self, volume: VolumeRef, name: str) -> None:
        """Remove the file ``name`` (and a ``.part`` of it); absent is success."""
        path = self.path(volume.model_copy(update={"name": name}))
        async with self._locks.hold(str(path)):
            try:
                for p in (path, path.with_name(path.name + PART_SUFFIX)):
                    await asyncio.to_thread(p.unlink, missing_ok=True)
            except OSError as exc:
                raise volume_error("delete a file of", volume, exc) from exc

    async def backing_of(self, volume: VolumeRef, name: str) -> str | None:
        path = self.path(file_ref(volume, name))
        try:
            return await self._backing(volume, path)
        except Exception as exc:
            raise volume_error("inspect", volume, exc) from exc

    async def export(self, volume: VolumeRef, name: str, dest: Path) -> None:
        """``qemu-img convert -O qcow2`` of the pool file ``name`` (read as the volume's format;
        relative backing names resolve in the pool directory) into ``dest`` (see
        ``VolumeBackend.export``). A file a running QEMU writes fails on its image lock."""
        ref = exported_file(volume, name)
        path = self.path(ref)

        async def convert(part: Path) -> None:
            await _must_exist(path)
            fast = await asyncio.to_thread(copy_flags, part)
            args = ("convert", "-q", *fast, "-f", ref.format, "-O", "qcow2", str(path), str(part))
            await run_qemu_img(*args, qemu_img=self.qemu_img)

        async with self._locks.hold(str(path)):
            try:
                await write_new(dest, convert)
            except Exception as exc:
                raise volume_error("export", volume, exc) from exc

    async def allocated(self, volume: VolumeRef, name: str) -> int | None:
        """The pool file ``name``'s allocated bytes (``st_blocks * 512``: what the file system
        holds for it, holes not counted); None (logged) if it is missing, unreadable or the
        name unsafe."""
        try:
            path = self.path(exported_file(volume, name))
            async with self._locks.hold(str(path)):
                st = await asyncio.to_thread(path.stat)
        except (OSError, CorralError) as exc:
            log.warning("cannot measure %s of volume %s: %s", name, volume.volume_id, exc)
            return None
        return int(st.st_blocks) * 512

    async def _backing(self, volume: VolumeRef, path: Path) -> str | None:
        await _must_exist(path)
        info = await image_info(path, "qcow2", qemu_img=self.qemu_img)
        return name_in_dir(info.backing_file, str(path.parent))

    async def prepare(self, pool: PoolRef) -> None:
        """Create ``<path>/volumes`` (and ``path``) if absent, 0755."""
        root = Path(pool_settings(pool, LocalSettings).path)
        try:
            await asyncio.to_thread(_mkdir, root / VOLUMES_DIR)
        except OSError as exc:
            raise StorageError(
                f"cannot create the directory of pool {pool.id} at {root}: {exc.strerror or exc}",
                pool_id=pool.id,
                path=str(root),
            ) from exc

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


async def _must_exist(path: Path) -> None:
    """``StorageError`` (``reason="not_found"``) unless the file ``path`` exists."""
    if not await asyncio.to_thread(path.is_file):
        raise StorageError(f"file {path.name} does not exist", reason="not_found")


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
