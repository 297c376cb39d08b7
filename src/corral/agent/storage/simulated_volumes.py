"""The simulator's data-volume backend: volumes as sizes in memory, no I/O (but ``export``'s file).

Cheap enough for hundreds of simulated hosts in one process: one dict per pool.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from corral.agent.faults import FaultPlan
from corral.agent.storage.backend import DiskSource, PoolUsage, check_source_format
from corral.agent.storage.common import volume_error
from corral.agent.storage.dirpool import write_new
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import StorageError

log = logging.getLogger(__name__)

MIB = 1 << 20


def sim_own_bytes(pool_id: str, name: str) -> int:
    """What a simulated file (or Ceph snapshot) ``name`` of a pool holds of its own before any
    rebase: 1 MiB plus a multiple of 4 KiB below 4 MiB, the same in every run."""
    return MIB + (zlib.crc32(f"{pool_id}/{name}".encode()) % 1024) * 4096


class SimulatedBackend:
    """A ``VolumeBackend`` for every pool type that keeps ``{volume_id: size_gb}`` per pool.

    - ``faults.check("volume.create")`` (``volume.delete``, ``volume.resize``,
      ``volume.usage``, ``volume.prepare``) runs first in each call, as the simulated compute
      driver does.
    - Idempotent like the real backends: creating an existing volume keeps it (and its size),
      deleting an absent one succeeds, growing to a smaller size does nothing.
    - Volumes are thin: creation never fails for space; ``usage`` reports ``capacity_gb`` per
      pool as total and what the volumes' sizes leave of it (not below 0) as free.
    - ``source`` is ``sim://<host>/volumes/<name>`` (kind ``file``), in the volume's format.
    - iscsi pools list ``iscsi_luns`` as their LUNs (``luns``).
    - Snapshot files (``create_overlay``, ``rebase``, ``delete_file``; fault ops
      ``volume.create_overlay``, ``volume.rebase``, ``volume.delete_file``) are kept as
      ``{name: backing name}`` per pool (``files``), apart from the volumes' sizes.
    - ``export`` (fault op ``volume.export``) writes a real file, ``b"simulated volume
      <volume_id> file <name>\n"`` (no qemu-img here: not a qcow2 image), with the real
      backends' temporary name and rename; a volume this backend does not hold, or a ``name``
      that is neither its active file nor a recorded snapshot file, is a ``StorageError``
      (``reason="not_found"``) as on a real pool.
    - Ceph's snapshots (``RbdSnapshots``: ``snap_create``, ``snap_rollback``, ``snap_remove``;
      fault ops ``volume.snap_create``, ``volume.snap_rollback``, ``volume.snap_remove``) are
      a set of names per volume (``snapshots``), whatever the pool type; ``delete`` drops them
      with the volume. Creating one of an unknown volume records it (lenient, like
      ``resize``); rolling back to a name not recorded is a ``StorageError``
      (``reason="not_found"``); the volume's size is not touched.
    - ``allocated`` / ``snap_allocated`` (fault op ``volume.allocated``: a failure gives None,
      as a real measurement failure does) are deterministic and small: each file or Ceph
      snapshot holds ``sim_own_bytes`` of its own (1 to 5 MiB, from the pool id and its
      name), and a ``rebase`` adds to the file what the layers it no longer reads through held
      (as a safe ``qemu-img rebase`` copies them in); ``delete_file`` forgets the addition.
    """

    def __init__(
        self, *, host_name: str, faults: FaultPlan | None = None, capacity_gb: float = 1000.0
    ) -> None:
        self.host_name = host_name
        self.iscsi_luns: list[tuple[int, int]] = [(1, 10), (2, 10), (3, 20), (4, 50)]
        """The LUNs (number, GiB) every simulated iscsi target has."""
        self.faults = faults if faults is not None else FaultPlan()
        self.capacity_gb = capacity_gb
        self.calls: Counter[str] = Counter()
        self._pools: dict[str, dict[str, int]] = {}
        self._files: dict[str, dict[str, str | None]] = {}
        self._snaps: dict[tuple[str, str], set[str]] = {}
        self._merged: dict[tuple[str, str], int] = {}
        """Bytes rebases copied into a file, by (pool id, file name)."""

    async def create(self, volume: VolumeRef) -> None:
        self._enter("volume.create")
        self._pools.setdefault(volume.pool.id, {}).setdefault(volume.volume_id, volume.size_gb)

    async def create_from(self, volume: VolumeRef, source: Path, source_format: str) -> None:
        """Like ``create`` (fault op ``volume.create``): the source file is not read (the
        simulator may have none); ``InvalidInput`` for a format other than qcow2 or raw."""
        self._enter("volume.create")
        check_source_format(volume, source_format)
        self._pools.setdefault(volume.pool.id, {}).setdefault(volume.volume_id, volume.size_gb)

    async def delete(self, volume: VolumeRef) -> None:
        self._enter("volume.delete")
        pool = self._pools.get(volume.pool.id)
        if pool is not None:
            pool.pop(volume.volume_id, None)
            if not pool:
                del self._pools[volume.pool.id]
        self._snaps.pop((volume.pool.id, volume.volume_id), None)

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """Grow the volume; an absent one is created at ``size_gb`` (the simulator is lenient:
        a simulated agent restarts empty while the server still knows its volumes)."""
        self._enter("volume.resize")
        pool = self._pools.setdefault(volume.pool.id, {})
        pool[volume.volume_id] = max(pool.get(volume.volume_id, 0), size_gb)

    def source(self, volume: VolumeRef) -> DiskSource:
        return DiskSource(
            kind="file",
            path=f"sim://{self.host_name}/volumes/{volume.name}",
            format=volume.format,
        )

    async def prepare(self, pool: PoolRef) -> None:
        self._enter("volume.prepare")

    async def luns(self, pool: PoolRef) -> list[tuple[int, int]]:
        """An iscsi pool's LUNs (fault op ``volume.luns``): ``iscsi_luns`` (number, bytes)."""
        self._enter("volume.luns")
        return [(n, gib << 30) for n, gib in self.iscsi_luns]

    async def usage(self, pool: PoolRef) -> PoolUsage:
        self._enter("volume.usage")
        used = sum(self._pools.get(pool.id, {}).values())
        return PoolUsage(
            total_gb=float(self.capacity_gb), free_gb=float(max(0.0, self.capacity_gb - used))
        )

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        """Record ``new_name`` backed by ``backing_name`` (existing: kept as it is)."""
        self._enter("volume.create_overlay")
        self._files.setdefault(volume.pool.id, {}).setdefault(new_name, backing_name)

    async def rebase(self, volume: VolumeRef, name: str, backing_name: str | None) -> None:
        """Record ``name`` as backed by ``backing_name`` (an unknown file is recorded too);
        what the layers between its old backing and ``backing_name`` held is added to its
        ``allocated`` (all of its old chain when ``backing_name`` is not in it)."""
        self._enter("volume.rebase")
        pool = volume.pool.id
        files = self._files.setdefault(pool, {})
        layer, seen, copied = files.get(name), {name}, 0
        while layer is not None and layer != backing_name and layer not in seen:
            seen.add(layer)
            copied += self._own(pool, layer)
            layer = files.get(layer)
        files[name] = backing_name
        if copied:
            self._merged[(pool, name)] = self._merged.get((pool, name), 0) + copied

    async def delete_file(self, volume: VolumeRef, name: str) -> None:
        self._enter("volume.delete_file")
        self._merged.pop((volume.pool.id, name), None)
        files = self._files.get(volume.pool.id)
        if files is not None:
            files.pop(name, None)
            if not files:
                del self._files[volume.pool.id]

    async def backing_of(self, volume: VolumeRef, name: str) -> str | None:
        """The recorded backing; None for files this backend did not make."""
        return self._files.get(volume.pool.id, {}).get(name)

    async def allocated(self, volume: VolumeRef, name: str) -> int | None:
        """The file's simulated size (see the class docstring); None if the fault op
        ``volume.allocated`` fails."""
        if not self._measurable(volume, name):
            return None
        return self._own(volume.pool.id, name)

    async def snap_allocated(self, volume: VolumeRef, snap: str) -> int | None:
        """The Ceph snapshot's simulated size, ``sim_own_bytes`` of ``<volume id>@<snap>``;
        None if the fault op ``volume.allocated`` fails."""
        if not self._measurable(volume, snap):
            return None
        return sim_own_bytes(volume.pool.id, f"{volume.volume_id}@{snap}")

    async def snap_sizes(self, volume: VolumeRef) -> dict[str, int]:
        """``snap_allocated`` of every snapshot the simulator holds for the volume."""
        if not self._measurable(volume, "snapshots"):
            return {}
        snaps = self._snaps.get((volume.pool.id, volume.volume_id), set())
        return {s: sim_own_bytes(volume.pool.id, f"{volume.volume_id}@{s}") for s in sorted(snaps)}

    def _measurable(self, volume: VolumeRef, name: str) -> bool:
        try:
            self._enter("volume.allocated")
        except Exception as exc:
            log.warning("cannot measure %s of volume %s: %s", name, volume.volume_id, exc)
            return False
        return True

    def _own(self, pool_id: str, name: str) -> int:
        return sim_own_bytes(pool_id, name) + self._merged.get((pool_id, name), 0)

    async def export(self, volume: VolumeRef, name: str, dest: Path) -> None:
        self._enter("volume.export")

        async def write(part: Path) -> None:
            if volume.volume_id not in self._pools.get(volume.pool.id, {}) or (
                name != volume.name and name not in self._files.get(volume.pool.id, {})
            ):
                raise StorageError(f"file {name} does not exist", reason="not_found")
            content = f"simulated volume {volume.volume_id} file {name}\n".encode()
            await asyncio.to_thread(part.write_bytes, content)

        try:
            await write_new(dest, write)
        except Exception as exc:
            raise volume_error("export", volume, exc) from exc

    async def snap_create(self, volume: VolumeRef, snap: str) -> None:
        """Record the snapshot ``snap`` of the volume (existing: kept)."""
        self._enter("volume.snap_create")
        self._snaps.setdefault((volume.pool.id, volume.volume_id), set()).add(snap)

    async def snap_rollback(self, volume: VolumeRef, snap: str) -> None:
        """Nothing to roll back in memory; ``StorageError`` (``reason="not_found"``, context
        ``pool_id``, ``volume_id``, ``snap``) if ``snap`` is not recorded."""
        self._enter("volume.snap_rollback")
        if snap not in self._snaps.get((volume.pool.id, volume.volume_id), ()):
            missing = StorageError(f"snapshot {snap} does not exist", reason="not_found")
            err = volume_error("roll back", volume, missing)
            err.context["snap"] = snap
            raise err

    async def snap_remove(self, volume: VolumeRef, snap: str) -> None:
        """Forget the snapshot ``snap``; absent is success."""
        self._enter("volume.snap_remove")
        key = (volume.pool.id, volume.volume_id)
        snaps = self._snaps.get(key)
        if snaps is not None:
            snaps.discard(snap)
            if not snaps:
                del self._snaps[key]

    async def snap_clone(self, volume: VolumeRef, snap: str, target: VolumeRef) -> None:
        """Record ``target`` as a volume (fault op ``volume.snap_clone``); ``StorageError``
        ``reason="not_found"`` for a snapshot it does not know."""
        self._enter("volume.snap_clone")
        if snap not in self._snaps.get((volume.pool.id, volume.volume_id), set()):
            raise StorageError(
                f"snapshot {snap} of volume {volume.volume_id} not found",
                pool_id=volume.pool.id,
                volume_id=volume.volume_id,
                reason="not_found",
            )
        self._pools.setdefault(target.pool.id, {}).setdefault(target.volume_id, target.size_gb)

    def snapshots(self, pool_id: str, volume_id: str) -> frozenset[str]:
        """The Ceph snapshots recorded for a volume."""
        return frozenset(self._snaps.get((pool_id, volume_id), ()))

    def files(self, pool_id: str) -> Mapping[str, str | None]:
        """The snapshot files made on a pool, with their backing (read-only view)."""
        return MappingProxyType(self._files.get(pool_id, {}))

    def volumes(self, pool_id: str) -> Mapping[str, int]:
        """Size in GB of each volume of a pool, by volume id (read-only view)."""
        return MappingProxyType(self._pools.get(pool_id, {}))

    def _enter(self, op: str) -> None:
        self.calls[op] += 1
        self.faults.check(op)
