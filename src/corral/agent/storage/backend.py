"""The data-volume backend interface: one implementation per pool type.

A backend makes, grows and deletes volumes on a pool and says how QEMU reaches them
(``DiskSource``, turned into the domain's ``<disk>`` by the compute driver). Backends are
stateless about volumes: everything they need comes in the ``VolumeRef`` (pool settings and
credentials included), so an agent needs no pool configuration of its own.

Contract shared by every method:
- idempotent: creating an existing volume, deleting an absent one, growing to a size it already
  has (or exceeds) succeed without doing anything;
- they raise only ``corral.api.errors`` errors: ``StorageError`` for I/O and tool failures
  (context: ``pool_id``, ``volume_id``), ``InvalidInput`` for settings the backend cannot use;
  volumes never shrink (a smaller size is a no-op success);
- on failure they leave nothing they created in the same call (no half-made file, image or LUN);
- secrets (``pool.credentials``) never appear in error messages, contexts or logs.

Snapshots (``create_overlay``, ``rebase``, ``delete_file``, ``backing_of``) are external qcow2
snapshots: every file of a volume lives next to the others and a file names its backing by its
relative name (local: chains survive the pool being mounted elsewhere) or, where QEMU cannot
resolve relative names (NFS), by its full URL. ``VolumeRef.name`` is the
volume's active file; the server keeps the tree and names the files. Only qcow2 volumes of file
pools (local, nfs) have them: others raise ``InvalidInput``. ``allocated`` (and Ceph's
``RbdSnapshots.snap_allocated``) measures what one file (snapshot) takes on the pool, for the
snapshots' sizes: best effort, None rather than an error.

``export`` copies one file of a volume (any pool type) out of the pool as a standalone local
qcow2 file (images captured from volumes and snapshots). It reads the source with QEMU's own
image locks (never ``-U``): only file-backed local pools have them, so on NFS and RBD nothing
stops a copy of a file a running VM writes and the caller's guarantee is the only protection.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from corral.agent.storage.common import file_ref
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InvalidInput

log = logging.getLogger(__name__)

SOURCE_FORMATS = ("qcow2", "raw")
"""Formats ``create_from`` copies from (an ISO is refused: it is CD-ROM media)."""


@dataclass(frozen=True)
class DiskAuth:
    """Credentials QEMU needs to open a network disk. The compute driver stores ``secret`` in a
    libvirt secret (usage ``corral-pool-<pool_id>``) and refers to it from the ``<disk>``."""

    type: Literal["ceph", "iscsi"]
    username: str
    secret: str = field(repr=False)
    pool_id: str


@dataclass(frozen=True)
class DiskSource:
    """How QEMU opens a volume.

    ``kind="file"``: ``path`` on the host. ``kind="network"``: ``protocol`` (nfs, iscsi, rbd),
    ``name`` as libvirt's ``<source name=…>`` wants it (nfs: ``/export/dir/file``, iscsi:
    ``<iqn>/<lun>``, rbd: ``<pool>/<image>``), ``hosts`` as (host, port) pairs, ``auth`` if any.
    """

    kind: Literal["file", "network"]
    format: Literal["qcow2", "raw"]
    path: str = ""
    protocol: Literal["", "nfs", "iscsi", "rbd"] = ""
    name: str = ""
    hosts: tuple[tuple[str, int], ...] = ()
    auth: DiskAuth | None = None


@dataclass(frozen=True)
class PoolUsage:
    """What a host sees of a pool, in GiB: the backing store's ``total`` and ``free`` space."""

    total_gb: float
    free_gb: float


class VolumeBackend(Protocol):
    """Volumes of one pool type; see the module docstring for the shared contract."""

    async def create(self, volume: VolumeRef) -> None:
        """Make a blank volume of ``volume.size_gb`` (thin where the pool can be thin)."""

    async def create_from(self, volume: VolumeRef, source: Path, source_format: str) -> None:
        """Make the volume as a copy of the local image file ``source`` (``source_format``:
        qcow2 or raw, else ``InvalidInput``), converted to ``volume.format`` and grown to
        ``volume.size_gb`` (``InvalidInput`` if the image's virtual size is larger). Existing is
        success (kept as it is, whatever it holds); a failed call leaves no volume."""

    async def delete(self, volume: VolumeRef) -> None:
        """Remove the volume and everything the backend keeps for it."""

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """Grow a volume that no running VM uses (a running VM's disk is grown by the compute
        driver's live block resize instead)."""

    def source(self, volume: VolumeRef) -> DiskSource:
        """How QEMU reaches the volume (no I/O)."""

    async def usage(self, pool: PoolRef) -> PoolUsage:
        """Total and free space of the pool's backing store as this host sees it."""

    # --- external (qcow2) snapshots: files of one volume, named by the server ---------------

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        """Make ``new_name``: an empty qcow2 file backed by ``backing_name`` (a qcow2 file of
        the same volume, in the same place on the pool), of the backing's virtual size.
        Existing is success (the file is kept as it is)."""

    async def rebase(self, volume: VolumeRef, name: str, backing_name: str | None) -> None:
        """Put the qcow2 file ``name`` on ``backing_name`` (None: standalone) in safe mode: the
        data the old chain gave and the new one lacks is copied into ``name``, so a reader sees
        the same bytes. Only for files no VM has open. Already on that backing is success."""

    async def delete_file(self, volume: VolumeRef, name: str) -> None:
        """Remove the file ``name`` of the volume; absent is success."""

    async def backing_of(self, volume: VolumeRef, name: str) -> str | None:
        """The backing file of ``name`` as a name on the pool (the string written in the image
        if it is elsewhere), None for a standalone file. ``StorageError`` if it is absent."""

    async def allocated(self, volume: VolumeRef, name: str) -> int | None:
        """Bytes the file ``name`` of the volume (its active file ``volume.name`` or one of its
        snapshot files; rbd: the image ``name``) takes on the pool: its own data and metadata,
        not its backing chain's. For a frozen snapshot file that is what was written between
        its parent and it. None when the pool cannot tell (iscsi: a LUN is all allocated).

        Best effort, for figures only: it never raises for a failed measurement (a missing
        file, a tool or I/O failure, an unsafe name), which is logged and gives None, so a task
        never fails because of it. Serialized with the other calls on that file where the
        backend serializes calls."""

    async def export(self, volume: VolumeRef, name: str, dest: Path) -> None:
        """Write the file ``name`` of the volume (its active file ``volume.name`` or one of its
        snapshot files; pools without files, rbd: the image ``name``) as a standalone qcow2
        file ``dest`` on this host, its backing chain flattened (``qemu-img convert -O qcow2``),
        mode 0644: readable by whoever reads the data dir.

        The caller makes sure nothing writes the source (the VM stopped, or ``name`` a frozen
        snapshot file). The source is never opened with ``-U`` (force-share): where QEMU's image
        locks exist (local pools), a file a running QEMU holds open for writing fails with
        ``StorageError``, while a backing file a running VM only reads can be exported.
        ``dest``'s parent exists; an existing ``dest`` is removed first (replaced). The copy is
        written to ``<dest>.part`` and renamed, so after a failure or cancellation ``dest`` (and
        the ``.part``) is absent. ``StorageError`` (context ``pool_id``, ``volume_id``;
        ``reason="not_found"`` for a missing source) for tool and I/O failures, never with a
        secret in its message; ``InvalidInput`` for an unsafe name or settings (raised before
        ``dest`` is touched). Serialized with the other calls on that file."""

    async def prepare(self, pool: PoolRef) -> None:
        """Make the pool ready for volumes on this host (``pools.sync``): create what volumes
        will be put in (a local directory, the NFS ``corral-volumes`` directory), or nothing.
        Idempotent; ``StorageError`` (context ``pool_id``) when it cannot."""


@runtime_checkable
class ImageCache(Protocol):
    """A backend that stores an image once per pool and makes volumes from it as copy-on-write
    children (local: qcow2 overlays on ``<pool>/images/``; rbd: clones of a base image)."""

    async def create_on_image(
        self, volume: VolumeRef, image_id: str, source: Path, source_format: str
    ) -> None:
        """Make the volume from the image (``source``: the host's checked copy), through the
        pool's own copy of it (made once). Existing volume: kept as it is."""

    async def forget_image(self, pool: PoolRef, image_id: str) -> None:
        """Remove the pool's own copy of the image (the caller knows no volume uses it);
        absent: success."""


@runtime_checkable
class LunInventory(Protocol):
    """A backend whose pools are made of LUNs the storage admin provisions (iscsi)."""

    async def luns(self, pool: PoolRef) -> list[tuple[int, int]]:
        """The pool's LUNs as (LUN number, size in bytes), by number."""


@runtime_checkable
class RbdSnapshots(Protocol):
    """A backend whose volumes have Ceph's own snapshots (rbd pools): named, copy-on-write
    points in time kept inside the image (no files; the external snapshots above are refused).
    ``snap`` is 1-64 of ``A-Za-z0-9_-`` (else ``InvalidInput``); each call is serialized with
    the other calls on the image and raises ``StorageError`` (context ``pool_id``,
    ``volume_id``, ``snap``) as the shared contract says."""

    async def snap_create(self, volume: VolumeRef, snap: str) -> None:
        """Snapshot the volume's image as ``snap``; existing is success (kept as it is).
        ``reason="not_found"`` for a missing image."""

    async def snap_rollback(self, volume: VolumeRef, snap: str) -> None:
        """Make the image's data the snapshot's (the snapshots are kept). No client may have
        the image open: ``reason="in_use"`` (nothing done); ``reason="not_found"`` for a missing
        snapshot or image."""

    async def snap_remove(self, volume: VolumeRef, snap: str) -> None:
        """Remove the snapshot, unprotected first if it is protected; an absent snapshot or
        image is success."""

    async def snap_clone(self, volume: VolumeRef, snap: str, target: VolumeRef) -> None:
        """Make ``target`` (same pool) a copy-on-write clone of the snapshot, grown to its
        size; existing is success. ``reason="not_found"`` for a missing snapshot or image."""

    async def snap_allocated(self, volume: VolumeRef, snap: str) -> int | None:
        """Bytes the snapshot ``snap`` takes in the pool: the data written to the image between
        the snapshot before it and it (``rbd du <pool>/<image>@<snap>``, ``used_size``). Best
        effort like ``VolumeBackend.allocated``: None (logged) when it cannot be measured, never
        an error."""

    async def snap_sizes(self, volume: VolumeRef) -> dict[str, int]:
        """``snap_allocated`` of every snapshot of the image in one measure (after a removal
        Ceph counts the removed snapshot's data in the next one). Best effort: ``{}`` (logged)
        when it cannot be measured."""


async def allocated_or_none(backend: object, volume: VolumeRef, name: str) -> int | None:
    """``backend.allocated(volume, name)`` for a task's result, whatever the backend does: a
    backend without the method, one raising or answering something else than a size gives None
    (logged at warning), so measuring never fails a task. Cancellation propagates."""
    return await _guarded(getattr(backend, "allocated", None), volume, name, name)


async def snap_allocated_or_none(backend: RbdSnapshots, volume: VolumeRef, snap: str) -> int | None:
    """``backend.snap_allocated(volume, snap)`` guarded like ``allocated_or_none``."""
    measure = getattr(backend, "snap_allocated", None)
    return await _guarded(measure, volume, snap, f"snapshot {snap}")


async def _guarded(
    measure: Callable[[VolumeRef, str], Awaitable[object]] | None,
    volume: VolumeRef,
    name: str,
    what: str,
) -> int | None:
    if measure is None:
        return None
    try:
        size = await measure(volume, name)
    except Exception as exc:
        log.warning("cannot measure %s of volume %s: %s", what, volume.volume_id, exc)
        return None
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return None


def check_source_format(volume: VolumeRef, source_format: str) -> str:
    """``source_format`` if ``create_from`` can copy from it, else ``InvalidInput``."""
    if source_format not in SOURCE_FORMATS:
        raise InvalidInput(
            f"cannot make a volume from a {source_format} image (only qcow2 or raw)",
            volume_id=volume.volume_id,
            format=source_format,
            supported=list(SOURCE_FORMATS),
        )
    return source_format


def exported_file(volume: VolumeRef, name: str) -> VolumeRef:
    """The file ``name`` of ``volume`` that ``export`` reads, as a ``VolumeRef`` whose
    ``format`` is the file's: the volume itself for its active file (qcow2 or raw), else a
    snapshot file (``file_ref``: qcow2 volumes only, ``InvalidInput`` for a raw one)."""
    return volume if name == volume.name else file_ref(volume, name)


def check_fits(volume: VolumeRef, virtual_size: int) -> None:
    """``InvalidInput`` if an image of ``virtual_size`` bytes does not fit ``volume.size_gb``."""
    if virtual_size > volume.size_gb * (1 << 30):
        need = -(-virtual_size // (1 << 30))
        raise InvalidInput(
            f"volume size {volume.size_gb} GiB is smaller than the image"
            f" ({virtual_size / (1 << 30):.2f} GiB virtual): at least {need} GiB is needed",
            volume_id=volume.volume_id,
            size_gb=volume.size_gb,
            virtual_size_bytes=virtual_size,
            min_size_gb=need,
        )
