"""The directory volume driver: cached base images and qcow2 overlays in a host directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from corral.agent.storage import layers
from corral.agent.storage.driver import Fetcher
from corral.agent.storage.qemu_img import (
    QEMU_IMG,
    copy_flags,
    create_overlay,
    image_info,
    run_qemu_img,
)
from corral.api.agent import ImageRef
from corral.api.errors import CorralError, InvalidInput, NotFound, StorageError

log = logging.getLogger(__name__)

GIB = 1 << 30
FETCH_ATTEMPTS = 2
"""Downloads of an image whose copy fails its checksum before giving up."""
FORMATS = frozenset({"qcow2", "raw", "iso"})
"""Formats of cached images; ``iso`` (ISO 9660, read as raw) is only for CD-ROM drives."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PART_SUFFIX = ".part"


class DirPool:
    """A ``VolumeDriver`` on a local directory ``root``::

        root/images/<image_id>.<format>   cached base images, 0644, shared by the VMs' disks
        root/vms/<vm_id>/root.qcow2       each VM's disk: a qcow2 overlay on its base image

    Sizes are GiB (``qemu-img``'s ``G``). Directories are 0755 so QEMU (user libvirt-qemu) can
    reach the files; libvirt's ``dynamic_ownership`` gives QEMU the VM's disk while it runs, so
    the disk itself is 0600. Files appear under their final name only when complete (temporary
    name, then an atomic rename), so an existing file is always a good one and a crash leaves
    only ``*.part`` files, which ``prepare()`` sweeps. One event loop only: the per-image and
    per-VM locks are ``asyncio`` locks.
    """

    def __init__(self, root: Path, *, qemu_img: str = QEMU_IMG) -> None:
        self.root = root
        self.images_dir = root / "images"
        self.vms_dir = root / "vms"
        self.qemu_img = qemu_img
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._vm_locks: dict[str, asyncio.Lock] = {}

    async def prepare(self) -> None:
        """Create the pool's directories and remove leftovers of interrupted calls. Idempotent."""
        await asyncio.to_thread(self._prepare)

    async def create_vm_disk(
        self, vm_id: str, image: ImageRef, size_gb: int, fetch: Fetcher
    ) -> str:
        """Return the path of the VM's disk, creating it if absent (see ``VolumeDriver``).

        Raises ``InvalidInput`` for a bad id or format, a ``size_gb`` below the image's virtual
        size, or an image that fails its checksum or is not a valid image of its format;
        ``StorageError`` for I/O and ``qemu-img`` failures; whatever ``fetch`` raises. On failure
        nothing new is left: neither the disk nor, if this call created it, the VM's directory.
        """
        path = Path(self.disk_path(vm_id))
        self.image_path(image)  # validates the image's id and format
        if image.format == "iso":
            raise InvalidInput(
                f"image {image.id} is an ISO: it goes in a CD-ROM drive, not under a VM's disk",
                image_id=image.id,
                format=image.format,
            )
        async with self.vm_lock(vm_id):
            if await asyncio.to_thread(path.is_file):
                return str(path)
            _check_size(image, size_gb, image.virtual_size_bytes)
            base = await self.ensure_image(image, fetch)
            info = await image_info(base, image.format, qemu_img=self.qemu_img)
            _check_size(image, size_gb, info.virtual_size)
            vm_dir = path.parent
            created_dir = not await asyncio.to_thread(vm_dir.exists)
            part = path.with_name(path.name + _PART_SUFFIX)
            try:
                await asyncio.to_thread(_mkdir, vm_dir)
                await create_overlay(
                    part,
                    base=base,
                    base_format=image.format,
                    size_bytes=size_gb * GIB,
                    qemu_img=self.qemu_img,
                )
                await asyncio.to_thread(_publish, part, path, 0o600)
            except BaseException as exc:
                _discard(part, vm_dir if created_dir else None)  # inline: survives cancellation
                if isinstance(exc, OSError):
                    raise StorageError(
                        f"cannot create the disk of VM {vm_id}: {exc}", vm_id=vm_id, path=str(path)
                    ) from exc
                raise
            return str(path)

    async def media_path(self, image: ImageRef, fetch: Fetcher) -> str:
        """The cached image (``ensure_image``) as a path string, for a CD-ROM drive."""
        return str(await self.ensure_image(image, fetch))

    async def delete_vm_disk(self, vm_id: str) -> None:
        """Remove the VM's directory and everything in it. Absent is success."""
        vm_dir = Path(self.disk_path(vm_id)).parent
        async with self.vm_lock(vm_id):
            try:
                await asyncio.to_thread(shutil.rmtree, vm_dir)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(
                    f"cannot delete the disk of VM {vm_id}: {exc}", vm_id=vm_id, path=str(vm_dir)
                ) from exc

    def disk_path(self, vm_id: str) -> str:
        """``root/vms/<vm_id>/root.qcow2``. Raises ``InvalidInput`` for an unsafe id."""
        return str(self.vms_dir / _safe_id(vm_id, "VM") / "root.qcow2")

    def image_path(self, image: ImageRef) -> Path:
        """Where ``image`` is cached: ``root/images/<image_id>.<format>``.

        Raises ``InvalidInput`` for an unsafe id or a format other than qcow2, raw and iso."""
        if image.format not in FORMATS:
            raise InvalidInput(
                f"unsupported image format {image.format!r}",
                image_id=image.id,
                format=image.format,
                supported=sorted(FORMATS),
            )
        return self.images_dir / f"{_safe_id(image.id, 'image')}.{image.format}"

    def vm_lock(self, vm_id: str) -> asyncio.Lock:
        """The lock every call on the VM's disk holds."""
        return self._vm_locks.setdefault(vm_id, asyncio.Lock())

    async def freeze_vm_disk(self, vm_id: str, layer: ImageRef) -> str:
        """See ``VolumeDriver`` and ``corral.agent.storage.layers``."""
        return await layers.freeze(self, vm_id, layer)

    async def thaw_vm_disk(self, vm_id: str, layer: ImageRef) -> None:
        """See ``VolumeDriver`` and ``corral.agent.storage.layers``."""
        await layers.thaw(self, vm_id, layer)

    async def flatten_vm_disk(self, vm_id: str) -> None:
        """See ``VolumeDriver`` and ``corral.agent.storage.layers``."""
        await layers.flatten(self, vm_id)

    def staging_path(self, image_id: str) -> Path:
        """``root/images/.<image_id>.capture.part`` (see ``VolumeDriver``); ``InvalidInput``
        for an unsafe id."""
        return self.images_dir / f".{_safe_id(image_id, 'image')}.capture{_PART_SUFFIX}"

    async def export_vm_disk(self, vm_id: str, dest: Path) -> None:
        """``qemu-img convert -O qcow2`` of the VM's disk (overlay and cached base flattened)
        into the standalone ``dest``, 0644, through ``write_new`` (``dest`` replaced; absent on
        failure). ``NotFound`` (context ``vm_id``) without a disk; ``StorageError`` (context
        ``vm_id``) when the copy fails, e.g. on QEMU's write lock of a running VM's disk."""
        path = Path(self.disk_path(vm_id))

        async def convert(part: Path) -> None:
            if not await asyncio.to_thread(path.is_file):
                raise NotFound(f"VM {vm_id} has no disk on this host", vm_id=vm_id)
            fast = await asyncio.to_thread(copy_flags, part)
            args = ("convert", "-q", *fast, "-f", "qcow2", "-O", "qcow2", str(path), str(part))
            await run_qemu_img(*args, qemu_img=self.qemu_img)

        async with self.vm_lock(vm_id):
            try:
                await write_new(dest, convert)
            except (OSError, StorageError) as exc:
                detail = exc.message if isinstance(exc, StorageError) else str(exc)
                context = dict(exc.context) if isinstance(exc, StorageError) else {}
                raise StorageError(
                    f"cannot export the disk of VM {vm_id}: {detail}",
                    **{**context, "vm_id": vm_id, "dest": str(dest)},
                ) from exc

    async def adopt_image(self, image: ImageRef, file: Path) -> Path:
        """Make ``file`` the cached copy of ``image``: fsync, mode 0644, renamed to
        ``image_path(image)`` (atomic; ``file`` must be on the pool's file system). The caller
        vouches that ``file`` is a standalone ``image.format`` image whose bytes match
        ``image.sha256`` (the server computed that digest from this very file): nothing is
        checked here. Already cached: ``file`` is deleted and the cached copy kept. Returns the
        cache path. ``InvalidInput`` for an unusable id or format, ``StorageError`` when the
        move fails (the cache is then unchanged and ``file`` left to the caller)."""
        dest = self.image_path(image)
        async with self._image_locks.setdefault(dest.name, asyncio.Lock()):
            try:
                if await asyncio.to_thread(dest.is_file):
                    await asyncio.to_thread(file.unlink, missing_ok=True)
                    return dest
                await asyncio.to_thread(_mkdir, self.images_dir)
                await asyncio.to_thread(_publish, file, dest, 0o644)
            except OSError as exc:
                raise StorageError(
                    f"cannot add image {image.id} to the cache: {exc}",
                    image_id=image.id,
                    path=str(dest),
                ) from exc
        return dest

    async def capacity_gb(self) -> tuple[float, float]:
        """(total, free) GiB of the file system holding ``root`` (free: available to users)."""
        try:
            usage = await asyncio.to_thread(shutil.disk_usage, self._existing_ancestor())
        except OSError as exc:
            raise StorageError(f"cannot stat pool {self.root}: {exc}", path=str(self.root)) from exc
        return usage.total / GIB, usage.free / GIB

    async def ensure_image(self, image: ImageRef, fetch: Fetcher) -> Path:
        """Return the cached base image, fetching and checking it first if absent.

        Concurrent calls for one image fetch it once: the others wait and reuse it. The bytes
        must match ``image.sha256`` and ``image.size_bytes`` (a copy that does not is fetched
        again, up to ``FETCH_ATTEMPTS`` times) and be a valid ``image.format`` image without a
        backing or external data file (which could point at host files), else ``InvalidInput``;
        the download is then deleted.
        """
        dest = self.image_path(image)
        if await asyncio.to_thread(dest.is_file):
            return dest
        async with self._image_locks.setdefault(dest.name, asyncio.Lock()):
            if await asyncio.to_thread(dest.is_file):
                return dest
            await asyncio.to_thread(_mkdir, self.images_dir)
            part = await asyncio.to_thread(_temp_file, self.images_dir, dest.name)
            try:
                digest, size = "", -1
                for attempt in range(1, FETCH_ATTEMPTS + 1):  # a corrupted copy is fetched again
                    await fetch(image, part)
                    digest, size = await asyncio.to_thread(_sha256_and_size, part)
                    if digest == image.sha256.lower() and size == image.size_bytes:
                        break
                    log.warning(
                        "image %s: copy %d of %d does not match its checksum or size",
                        image.id,
                        attempt,
                        FETCH_ATTEMPTS,
                    )
                else:
                    raise InvalidInput(
                        f"image {image.id} does not match its checksum or size",
                        image_id=image.id,
                        expected_sha256=image.sha256,
                        actual_sha256=digest,
                        expected_size=image.size_bytes,
                        actual_size=size,
                    )
                info = await image_info(part, _qemu_format(image), qemu_img=self.qemu_img)
                if info.backing_file or info.data_file:
                    raise InvalidInput(
                        f"image {image.id} refers to other files; only standalone images are"
                        " accepted",
                        image_id=image.id,
                        backing_file=info.backing_file,
                        data_file=info.data_file,
                    )
                await asyncio.to_thread(_publish, part, dest, 0o644)
            except CorralError:
                raise
            except OSError as exc:
                raise StorageError(
                    f"cannot cache image {image.id}: {exc}", image_id=image.id, path=str(dest)
                ) from exc
            except Exception as exc:
                raise StorageError(
                    f"fetching image {image.id} failed: {exc!r}", image_id=image.id
                ) from exc
            finally:
                _discard(part, None)  # inline: survives cancellation; already renamed on success
        return dest

    def _existing_ancestor(self) -> Path:
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    def _prepare(self) -> None:
        for d in (self.root, self.images_dir, self.vms_dir):
            _mkdir(d)
        for part in self.images_dir.glob(f"*{_PART_SUFFIX}"):
            part.unlink(missing_ok=True)
        for part in self.vms_dir.glob(f"*/*{_PART_SUFFIX}"):
            part.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                part.parent.rmdir()  # only if this left it empty (a creation that never finished)


def _qemu_format(image: ImageRef) -> str:
    """How ``qemu-img`` reads the image: an ISO is a raw image."""
    return "raw" if image.format == "iso" else image.format


def _safe_id(value: str, what: str) -> str:
    if not _ID.match(value) or ".." in value:
        raise InvalidInput(f"invalid {what} id {value!r} for a file name", **{what.lower(): value})
    return value


def _check_size(image: ImageRef, size_gb: int, virtual_size: int) -> None:
    if size_gb * GIB < virtual_size or size_gb <= 0:
        need = max(1, -(-virtual_size // GIB))
        raise InvalidInput(
            f"disk size {size_gb} GiB is smaller than image {image.id}"
            f" ({virtual_size / GIB:.2f} GiB virtual): at least {need} GiB is needed",
            image_id=image.id,
            size_gb=size_gb,
            virtual_size_bytes=virtual_size,
            min_size_gb=need,
        )


def _mkdir(path: Path) -> None:
    """Create ``path`` and its missing parents, mode 0755 (whatever the umask)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in missing:
        d.chmod(0o755)


def _temp_file(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=_PART_SUFFIX)
    os.close(fd)
    return Path(tmp)


def _publish(part: Path, dest: Path, mode: int) -> None:
    """Flush ``part`` to disk, set its mode and rename it to ``dest`` atomically."""
    with part.open("rb+") as f:
        os.fsync(f.fileno())
    part.chmod(mode)
    part.replace(dest)


async def write_new(
    dest: Path, write: Callable[[Path], Awaitable[object]], *, mode: int = 0o644
) -> None:
    """Make the file ``dest`` with ``write(part)``, which fills ``<dest>.part`` next to it,
    then fsync it, give it ``mode`` and rename it to ``dest`` (atomic). A ``dest`` (and a
    ``.part``) already there is removed first, so ``dest`` is either the new file or, after a
    failure or cancellation, absent: never a half-written one. Raises what ``write`` raises,
    ``OSError`` for the file operations."""
    part = dest.with_name(dest.name + _PART_SUFFIX)
    try:
        for old in (dest, part):
            await asyncio.to_thread(old.unlink, missing_ok=True)
        await write(part)
        await asyncio.to_thread(_publish, part, dest, mode)
    except BaseException:
        part.unlink(missing_ok=True)  # inline: survives cancellation
        raise


def _discard(part: Path, vm_dir: Path | None) -> None:
    part.unlink(missing_ok=True)
    if vm_dir is not None:
        shutil.rmtree(vm_dir, ignore_errors=True)


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
