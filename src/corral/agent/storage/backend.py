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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from corral.api.agent import PoolRef, VolumeRef


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

    async def delete(self, volume: VolumeRef) -> None:
        """Remove the volume and everything the backend keeps for it."""

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """Grow a volume that no running VM uses (a running VM's disk is grown by the compute
        driver's live block resize instead)."""

    def source(self, volume: VolumeRef) -> DiskSource:
        """How QEMU reaches the volume (no I/O)."""

    async def usage(self, pool: PoolRef) -> PoolUsage:
        """Total and free space of the pool's backing store as this host sees it."""
