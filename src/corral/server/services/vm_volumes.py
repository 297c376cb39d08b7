"""Data volumes made with a VM (``VmCreate.volumes``): checked and charged before placement,
recorded with the VM in the create transaction, created on their pools by ``vm.create``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InvalidInput, InvalidState, NoHostAvailable
from corral.api.vms import VmCreate
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import (
    StoragePoolHostRow,
    StoragePoolRow,
    VolumeAttachmentRow,
    VolumeRow,
)
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


@dataclass
class PlannedVolumes:
    volumes: list[PlannedVolume]
    hosts: frozenset[str]
    """The hosts that reach every pool (what placement may choose from)."""
    project_id: str


async def plan_vm_volumes(
    s: AsyncSession, spec: VmCreate, project_id: str, caller: Caller
) -> PlannedVolumes:
    """Check the requested volumes (pools enabled with room, names free) and charge the quota;
    the hosts that reach all their pools (``ok`` in ``storage_pool_hosts``). ``InvalidState``,
    ``NameTaken``, ``PoolFull``, ``QuotaExceeded``, ``NoHostAvailable`` (no host reaches them
    all); nothing is written on failure (the caller's transaction rolls back)."""
    planned: list[PlannedVolume] = []
    pools: dict[str, StoragePoolRow] = {}
    for i, v in enumerate(spec.volumes, start=1):
        pool = await get_row(s, StoragePoolRow, v.pool, "storage_pool")
        if pool.state != "enabled":
            raise InvalidState(
                f"storage pool {pool.name!r} is {pool.state}: no new volumes go there",
                pool=pool.name,
                state=pool.state,
            )
        pools[pool.id] = pool
        image_id = (
            await source_image(s, v.image, v.size_gb, caller) if v.image is not None else None
        )
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
    await quotas.adjust(s, project_id, volume_gb=sum(p.size_gb for p in planned))
    return PlannedVolumes(planned, frozenset(hosts), project_id)


async def record_vm_volumes(
    s: AsyncSession, planned: PlannedVolumes, *, vm_id: str, owner_id: str | None
) -> list[str]:
    """Write the volumes (``attaching``, not yet on their pools) and their attachments as
    ``vdb``, ``vdc``… in ``s``'s transaction, charge the pools; their ids, in order."""
    ids: list[str] = []
    attachments = []
    for p, device in zip(planned.volumes, DEVICES, strict=False):
        vol = await new_volume(
            s,
            p.pool,
            name=p.name,
            project_id=planned.project_id,
            owner_id=owner_id,
            size_gb=p.size_gb,
            status=VolumeStatus.attaching,
            image_id=p.image_id,
        )
        vid = vol.id
        s.add(vol)
        attachments.append(VolumeAttachmentRow(volume_id=vid, vm_id=vm_id, device=device))
        ids.append(vid)
    await s.flush()  # the volumes first: the unit of work does not order unrelated mappers
    s.add_all(attachments)
    await s.flush()
    return ids
