"""The volume driver interface: VM disks in a host-local pool.

Contract: methods are idempotent, raise only ``corral.api.errors`` errors (``StorageError`` for I/O
failures, ``InvalidInput`` for a corrupt image) and leave no partial file behind on failure.
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

    def disk_path(self, vm_id: str) -> str:
        """Where the VM's root disk is (or would be)."""

    async def capacity_gb(self) -> tuple[float, float]:
        """(total, free) gigabytes of the pool's file system."""
