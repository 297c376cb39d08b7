"""Volumes made with a VM: its root volume (``VmCreate.root_pool``) and its data volumes
(``VmCreate.volumes``), checked and charged before placement, recorded with the VM in the create
transaction, created on their pools by ``vm.create``.

A root volume is attached as ``vda``, made from the VM's image with the VM's disk size, and
counts in the project's quota once, as the VM's disk (``vm_usage``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InvalidInput, InvalidState, NoHostAvailable
from corral.api.vms import VmCreate
from corral.api.volumes import VolumeRole, VolumeStatus
from corral.server.db.tables import (
    StoragePoolHostRow,
    StoragePoolRow,
    VolumeAttachmentRow,
    VolumeRow,
)
from corral.server.db.types import new_id
from corral.server.identity import quotas
from corral.server.identity.caller import Caller
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import get_row
from corral.server.services.volumes import DEVICES, check_room, new_volume, source_image


@dataclass
class PlannedVolume:
    name: str
    size_gb: int
    pool: StoragePoolRow
    image_id: str | None = None
    root: bool = False
    id: str = field(default_factory=new_id)


@dataclass
class PlannedVolumes:
    volumes: list[PlannedVolume]
    hosts: frozenset[str]
    """The hosts that reach every pool (what placement may choose from)."""
    project_id: str

    @property
    def root(self) -> PlannedVolume | None:
        return next((p for p in self.volumes if p.root), None)


@dataclass(frozen=True)
class RootPlan:
    """A root volume to make: on ``pool`` (id or name), from ``image_id``, ``size_gb``."""

    pool: str
    image_id: str
    size_gb: int


async def _usable_pool(s: AsyncSession, ref: str) -> StoragePoolRow:
    pool = await get_row(s, StoragePoolRow, ref, "storage_pool")
    if pool.state != "enabled":
        raise InvalidState(
            f"storage pool {pool.name!r} is {pool.state}: no new volumes go there",
            pool=pool.name,
            state=pool.state,
        )
    return pool


async def plan_vm_volumes(
    s: AsyncSession,
    spec: VmCreate,
    project_id: str,
    caller: Caller | None,
    root: RootPlan | None = None,
) -> PlannedVolumes:
    """Check the requested volumes (pools enabled with room, names free) and charge the quota
    (data volumes only: the root volume is the VM's disk); the hosts that reach all their pools
    (``ok`` in ``storage_pool_hosts``). ``InvalidState``, ``NameTaken``, ``PoolFull``,
    ``QuotaExceeded``, ``NoHostAvailable`` (no host reaches them all); nothing is written on
    failure (the caller's transaction rolls back). ``caller`` (whose images a data volume may
    be made from) may be None when no data volume comes from an image."""
    planned: list[PlannedVolume] = []
    pools: dict[str, StoragePoolRow] = {}
    if root is not None:
        pool = await _usable_pool(s, root.pool)
        pools[pool.id] = pool
        planned.append(
            PlannedVolume(f"{spec.name}-root", root.size_gb, pool, root.image_id, root=True)
        )
    for i, v in enumerate(spec.volumes, start=1):
        pool = await _usable_pool(s, v.pool)
        pools[pool.id] = pool
        image_id = None
        if v.image is not None:
            assert caller is not None, "a data volume from an image needs the caller"
            image_id = await source_image(s, v.image, v.size_gb, caller)
        planned.append(PlannedVolume(v.name or f"{spec.name}-data{i}", v.size_gb, pool, image_id))
    dupes = [n for n, k in Counter(p.name for p in planned).items() if k > 1]
    if dupes:
        raise InvalidInput("two volumes of the request have the same name", names=dupes)
    for p in planned:
        await ensure_name_free(s, VolumeRow, p.name, "volume", project_id=project_id)
    for pool in pools.values():
        check_room(pool, sum(p.size_gb for p in planned if p.pool is pool))
    hosts: set[str] | None = None
    for pool_id in pools:
        ok = set(
            await s.scalars(
                select(StoragePoolHostRow.host_id).where(
                    StoragePoolHostRow.pool_id == pool_id, StoragePoolHostRow.ok.is_(True)
                )
            )
        )
        hosts = ok if hosts is None else hosts & ok
    if not hosts:
        raise NoHostAvailable(
            "no host reaches every storage pool of the VM's volumes (see GET"
            " /storage-pools/{ref}/hosts)",
            pools=sorted(p.name for p in pools.values()),
        )
    await quotas.adjust(s, project_id, volume_gb=sum(p.size_gb for p in planned if not p.root))
    return PlannedVolumes(planned, frozenset(hosts), project_id)


async def record_vm_volumes(
    s: AsyncSession, planned: PlannedVolumes, *, vm_id: str, owner_id: str | None
) -> list[str]:
    """Write the volumes (``attaching``, not yet on their pools) and their attachments (the
    root volume as ``vda``, the data volumes as ``vdb``, ``vdc``…) in ``s``'s transaction,
    charge the pools; their ids, in order (the root volume first)."""
    ids: list[str] = []
    attachments = []
    data = iter(DEVICES)
    for p in planned.volumes:
        device = "vda" if p.root else next(data)
        vol = await new_volume(
            s,
            p.pool,
            name=p.name,
            project_id=planned.project_id,
            owner_id=owner_id,
            size_gb=p.size_gb,
            status=VolumeStatus.attaching,
            image_id=p.image_id,
            vid=p.id,
            role=VolumeRole.root if p.root else VolumeRole.data,
        )
        vid = vol.id
        s.add(vol)
        attachments.append(VolumeAttachmentRow(volume_id=vid, vm_id=vm_id, device=device))
        ids.append(vid)
    await s.flush()  # the volumes first: the unit of work does not order unrelated mappers
    s.add_all(attachments)
    await s.flush()
    return ids
