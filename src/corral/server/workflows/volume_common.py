"""What volume workflows share: volume and pool references for agents, attached disks of a VM,
status updates, which host may act on a pool."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import DataDisk, PoolRef, VolumeRef
from corral.api.errors import NoHostAvailable, NotFound
from corral.api.hosts import HostStatus
from corral.api.volumes import VolumeQos, VolumeStatus
from corral.server.db.tables import (
    HostRow,
    StoragePoolClusterRow,
    StoragePoolRow,
    VolumeAttachmentRow,
    VolumeRow,
)
from corral.server.secretbox import SecretBox
from corral.server.workflows.engine import Ctx


def credentials_context(pool_id: str) -> str:
    """The sealing context of a pool's credentials (a token copied to another pool won't open)."""
    return f"storage_pool:{pool_id}:credentials"


def pool_ref(secrets: SecretBox, pool: StoragePoolRow) -> PoolRef:
    """The pool as agents need it, its credentials opened (never journaled or stored: built
    again by every step that sends it)."""
    creds = None
    if pool.credentials_sealed is not None:
        creds = secrets.open(pool.credentials_sealed, credentials_context(pool.id))
    return PoolRef(id=pool.id, type=pool.type, settings=dict(pool.settings), credentials=creds)


def volume_ref(secrets: SecretBox, vol: VolumeRow, pool: StoragePoolRow) -> VolumeRef:
    return VolumeRef(
        volume_id=vol.id,
        pool=pool_ref(secrets, pool),
        name=vol.pool_name,
        size_gb=vol.size_gb,
        format=vol.format,
    )


def data_disk(secrets: SecretBox, vol: VolumeRow, pool: StoragePoolRow, device: str) -> DataDisk:
    return DataDisk(
        volume=volume_ref(secrets, vol, pool),
        device=device,
        shareable=vol.shareable,
        qos=VolumeQos.model_validate(vol.qos or {}),
    )


async def load_volume(ctx: Ctx, volume_id: str | None = None) -> tuple[VolumeRow, StoragePoolRow]:
    """The workflow's volume and its pool; ``NotFound`` if the volume is gone."""
    vid = volume_id or ctx.params["volume_id"]
    async with ctx.deps.sessionmaker() as s:
        vol = await s.get(VolumeRow, vid)
        pool = await s.get(StoragePoolRow, vol.pool_id) if vol is not None else None
    if vol is None or pool is None:
        raise NotFound(f"volume {vid} not found", kind="volume", ref=vid)
    return vol, pool


async def vm_disks(ctx: Ctx, vm_id: str) -> list[DataDisk]:
    """The data disks attached to ``vm_id``, in device order (what its definition must hold)."""
    async with ctx.deps.sessionmaker() as s:
        rows = (
            await s.execute(
                select(VolumeAttachmentRow.device, VolumeRow, StoragePoolRow)
                .join(VolumeRow, VolumeRow.id == VolumeAttachmentRow.volume_id)
                .join(StoragePoolRow, StoragePoolRow.id == VolumeRow.pool_id)
                .where(VolumeAttachmentRow.vm_id == vm_id)
                .order_by(VolumeAttachmentRow.device)
            )
        ).all()
    return [data_disk(ctx.deps.secrets, vol, pool, device) for device, vol, pool in rows]


async def set_volume(ctx: Ctx, volume_id: str | None = None, **values: Any) -> None:
    """Update the volume row (absent rows are ignored: undo paths may run after deletion)."""
    vid = volume_id or ctx.params["volume_id"]
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(update(VolumeRow).where(VolumeRow.id == vid).values(**values))


async def settle_status(s: AsyncSession, volume_id: str) -> None:
    """``in_use`` if the volume has attachments, else ``available`` (clears ``error``)."""
    n = await s.scalar(
        select(func.count())
        .select_from(VolumeAttachmentRow)
        .where(VolumeAttachmentRow.volume_id == volume_id)
    )
    status = VolumeStatus.in_use if n else VolumeStatus.available
    await s.execute(
        update(VolumeRow).where(VolumeRow.id == volume_id).values(status=status, error=None)
    )


async def settle(ctx: Ctx, *volume_ids: str) -> None:
    """``settle_status`` of ``volume_ids`` (default: the workflow's volume) in one transaction."""
    async with ctx.deps.sessionmaker.begin() as s:
        for vid in volume_ids or (ctx.params["volume_id"],):
            await settle_status(s, vid)


async def release_vm_volumes(s: AsyncSession, vm_id: str) -> None:
    """Forget the attachments of a VM that is being deleted (its definition, and so the disks,
    are gone from the host); the volumes stay, ``available`` unless attached elsewhere."""
    ids = list(
        await s.scalars(
            select(VolumeAttachmentRow.volume_id).where(VolumeAttachmentRow.vm_id == vm_id)
        )
    )
    if not ids:
        return
    await s.execute(delete(VolumeAttachmentRow).where(VolumeAttachmentRow.vm_id == vm_id))
    for vid in ids:
        await settle_status(s, vid)


async def pool_host(s: AsyncSession, pool_id: str, vol: VolumeRow) -> str:
    """A host that can act on the volume: its own host for a local pool, else a connected,
    enabled host of a cluster attached to the pool. ``NoHostAvailable`` if none."""
    if vol.host_id is not None:
        return vol.host_id
    host_id = await s.scalar(
        select(HostRow.id)
        .join(StoragePoolClusterRow, StoragePoolClusterRow.cluster_id == HostRow.cluster_id)
        .where(
            StoragePoolClusterRow.pool_id == pool_id,
            HostRow.status == HostStatus.connected.value,
            HostRow.enabled.is_(True),
        )
        .order_by(HostRow.last_heartbeat_at.desc())
        .limit(1)
    )
    if host_id is None:
        raise NoHostAvailable(
            "no connected host reaches this storage pool", pool_id=pool_id, volume_id=vol.id
        )
    return str(host_id)
