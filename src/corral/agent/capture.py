"""The ``image.capture`` task: a disk copied into a standalone image, sent to the server's image
store and kept in this host's image cache.

Order: export (the disk, its chain flattened, into a staging file next to the cache, fsync'd; a
running VM's root disk by a live block copy), upload (hashed as it is read: one pass), adopt
into the cache. The staging file is removed on every failure (a crash leaves a ``*.part`` file
the pool's ``prepare()`` sweeps at the next start). The server stores the bytes and computes
the same SHA-256; the cached copy is then already the image every VM created from it on this
host is an overlay of (clones on this host fetch nothing).

``publish`` False (a full clone's base): export, then adopt, nothing sent: the cached copy is
then the only one, so a failed adoption fails the task (with ``publish`` a failed adoption
only costs a later download and is logged). ``corral.agent.publish`` sends it later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from corral.agent.compute.driver import ComputeDriver
from corral.agent.specs import SpecStore
from corral.agent.storage.driver import VolumeDriver
from corral.agent.storage.volumes import Backends
from corral.api.agent import ImageCaptureTask, ImageRef
from corral.api.errors import CorralError, StorageError
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

Uploader = Callable[[str, Path], Awaitable[tuple[int, str]]]
"""Streams a local file to a path on the server (``PUT``); returns the size and SHA-256 (hex)
of the bytes it sent."""

CAPTURED_FORMAT = "qcow2"
LIVE = (PowerState.running, PowerState.paused)


class ImageCapture:
    """Runs ``image.capture`` tasks; see the module docstring."""

    def __init__(
        self,
        *,
        volumes: VolumeDriver,
        backends: Backends,
        upload: Uploader,
        compute: ComputeDriver | None = None,
        specs: SpecStore | None = None,
    ) -> None:
        self.volumes = volumes
        self.backends = backends
        self.upload = upload
        self.compute = compute
        self.specs = specs

    async def run(self, task: ImageCaptureTask) -> dict[str, object]:
        """Capture the task's source; returns ``{"size_bytes", "sha256"}`` of the image sent
        (``publish`` False: of the cached copy, ``sha256`` None). ``NotFound`` for a VM
        without a disk here, the backend's, the cache's or the server's errors."""
        staging = self.volumes.staging_path(task.image_id)
        digest: str | None = None
        try:
            if task.vm_id is not None:
                await self._vm_disk(task.vm_id, staging)
            else:
                assert task.volume is not None  # the model's validator
                backend = self.backends.for_pool(task.volume.pool)
                await backend.export(task.volume, task.volume.name, staging)
            if task.publish:
                size, digest = await self.upload(task.upload_path, staging)
                await self._keep(task, staging, size, digest)
            else:
                size = await asyncio.to_thread(_size, staging)
                await self.volumes.adopt_image(_cached_ref(task.image_id, size, ""), staging)
        finally:
            _discard(staging)  # inline: survives cancellation; gone already once adopted
        return {"size_bytes": size, "sha256": digest}

    async def _vm_disk(self, vm_id: str, staging: Path) -> None:
        """The VM's root disk into ``staging``: a live block copy while the VM runs (a
        consistent copy of that moment), else the disk file converted (a root volume: its
        active file, exported by its pool's backend)."""
        compute = self.compute
        if compute is not None and await compute.power_state(vm_id) in LIVE:
            staging.unlink(missing_ok=True)  # noqa: ASYNC240 (one unlink; the copy makes it)
            await compute.copy_root(vm_id, staging)
            return
        stored = self.specs.get(vm_id) if self.specs is not None else None
        root = next((d for d in stored.spec.disks if d.device == "vda"), None) if stored else None
        if root is not None:
            backend = self.backends.for_pool(root.volume.pool)
            await backend.export(root.volume, root.volume.name, staging)
            return
        await self.volumes.export_vm_disk(vm_id, staging)

    async def _keep(self, task: ImageCaptureTask, staging: Path, size: int, digest: str) -> None:
        """Adopt the sent file as the cached copy of the image. The image is in the store
        already, so a failure here only costs a later download: logged, not raised."""
        try:
            await self.volumes.adopt_image(_cached_ref(task.image_id, size, digest), staging)
        except CorralError as exc:
            log.warning("image %s: cannot keep the captured copy: %s", task.image_id, exc)


def _cached_ref(image_id: str, size: int, digest: str) -> ImageRef:
    """The captured image as the cache knows it (``digest`` "": not computed)."""
    return ImageRef(
        id=image_id,
        sha256=digest,
        size_bytes=size,
        virtual_size_bytes=0,
        format=CAPTURED_FORMAT,
        download_path="",
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise StorageError(f"cannot read the captured copy: {exc}", path=str(path)) from exc


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
