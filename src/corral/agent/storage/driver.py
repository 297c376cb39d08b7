"""The volume driver interface: VM disks in a host-local pool.

Contract: methods are idempotent, raise only ``corral.api.errors`` errors (``StorageError`` for I/O
failures, ``InvalidInput`` for a corrupt image, ``NotFound`` for a disk that is not there) and
leave no partial file behind on failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from corral.api.agent import ImageRef

Fetcher = Callable[[ImageRef, Path], Awaitable[None]]
"""Downloads an image's bytes into the given path (the server's image store over HTTPS)."""


class VolumeDriver(Protocol):
    async def create_vm_disk(
        self, vm_id: str, image: ImageRef, size_gb: int, fetch: Fetcher
    ) -> str:
        """Make the VM's root disk: a qcow2 overlay of ``size_gb`` on the cached base image
        (fetched and checked against ``image.sha256`` first if not cached). Returns its path.
        If the disk already exists, return its path unchanged."""

    async def media_path(self, image: ImageRef, fetch: Fetcher) -> str:
        """The cached read-only copy of ``image`` (an ISO for a CD-ROM drive), fetched and
        checked against ``image.sha256`` first if not cached. Returns its path."""

    async def delete_vm_disk(self, vm_id: str) -> None:
        """Delete the VM's disks. Absent is success. Cached base images stay."""

    async def export_vm_disk(self, vm_id: str, dest: Path) -> None:
        """Write the VM's root disk (its overlay on the cached base image) as one standalone
        qcow2 file ``dest`` on this host, the chain flattened (``qemu-img convert -O qcow2``),
        mode 0644. The caller makes sure the VM is stopped: a disk a running QEMU holds open
        for writing fails on QEMU's image lock (``StorageError``). ``dest``'s parent exists;
        an existing ``dest`` is removed first (replaced); the file is written under
        ``<dest>.part`` and renamed, so after a failure (or cancellation) ``dest`` is absent.
        ``NotFound`` (context ``vm_id``) if the VM has no disk here, ``InvalidInput`` for an
        unsafe id (before ``dest`` is touched). Serialized with the VM's other disk calls."""

    async def adopt_image(self, image: ImageRef, file: Path) -> Path:
        """Move ``file`` (on the pool's file system; a standalone ``image.format`` image the
        caller has checked, whose bytes ``image.sha256`` was computed from) into the image
        cache as ``image``'s cached copy, mode 0644, with an atomic rename: VMs and CD-ROMs
        can use it without a download. Already cached: ``file`` is deleted and the cached copy
        kept. Returns the cached copy's path. Serialized with the image's fetches."""

    def staging_path(self, image_id: str) -> Path:
        """Where an image being captured is written before ``adopt_image``: on the cache's file
        system, a ``*.part`` name that the pool's start-up sweep removes. No I/O."""

    async def freeze_vm_disk(self, vm_id: str, layer: ImageRef) -> str:
        """Make the stopped VM's root disk the read-only cached image ``layer`` and the VM's
        disk a new empty overlay on it, in constant time (linked clones' disks are overlays on
        the layer too). Idempotent. Returns the layer's path. ``NotFound`` without a disk."""

    async def thaw_vm_disk(self, vm_id: str, layer: ImageRef) -> None:
        """Undo ``freeze_vm_disk`` while nothing else uses the layer. Nothing frozen: success."""

    async def flatten_vm_disk(self, vm_id: str) -> None:
        """Make the stopped VM's root disk standalone (the data of its backing chain copied in).
        Standalone already: success. ``NotFound`` without a disk."""

    def disk_path(self, vm_id: str) -> str:
        """Where the VM's root disk is (or would be)."""

    async def capacity_gb(self) -> tuple[float, float]:
        """(total, free) gigabytes of the pool's file system."""
