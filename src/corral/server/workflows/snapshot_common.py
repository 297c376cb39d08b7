"""What snapshot workflows share: the volume's files as a forest (file -> backing), the active
chain, references to a file of the volume for the agent, the end of an operation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import VolumeRef
from corral.api.errors import AgentUnreachable, CorralError, NotFound, Timeout
from corral.api.vms import PowerState
from corral.server.db.tables import SnapshotRow, StoragePoolRow, VmRow, VolumeRow
from corral.server.workflows.engine import Ctx
from corral.server.workflows.volume_common import load_volume, settle_status, volume_ref

LIVE = frozenset({PowerState.running.value, PowerState.paused.value})
CEPH_POOLS = frozenset({"rbd"})
"""Pools whose snapshots are Ceph's own (``rbd snap``): no overlay files, no merges; a
snapshot's ``file`` is its Ceph name."""


def file_ref(ctx: Ctx, vol: VolumeRow, pool: StoragePoolRow, name: str) -> VolumeRef:
    """The volume as the agent needs it, with ``name`` as the file meant."""
    return volume_ref(ctx.deps.secrets, vol, pool).model_copy(update={"name": name})


async def backings(s: AsyncSession, volume_id: str) -> dict[str, str | None]:
    """Every snapshot file of the volume with its backing file."""
    rows = await s.execute(
        select(SnapshotRow.file, SnapshotRow.backing).where(SnapshotRow.volume_id == volume_id)
    )
    return {f: b for f, b in rows}


def active_chain(vol: VolumeRow, files: dict[str, str | None]) -> list[str]:
    """The files under the active one, nearest first (what QEMU opens besides the active file)."""
    chain: list[str] = []
    f = vol.backing_name
    while f is not None and f not in chain:
        chain.append(f)
        f = files.get(f)
    return chain


async def vm_is_live(ctx: Ctx, vm_id: str | None) -> bool:
    if vm_id is None:
        return False
    async with ctx.deps.sessionmaker() as s:
        power = await s.scalar(select(VmRow.power_state).where(VmRow.id == vm_id))
    return power in LIVE


async def load_snapshot(ctx: Ctx) -> tuple[SnapshotRow, VolumeRow, StoragePoolRow]:
    sid = ctx.params["snapshot_id"]
    async with ctx.deps.sessionmaker() as s:
        snap = await s.get(SnapshotRow, sid)
    if snap is None:
        raise NotFound(f"snapshot {sid} not found", kind="snapshot", ref=sid)
    vol, pool = await load_volume(ctx)
    return snap, vol, pool


def outcome_unknown(err: CorralError) -> bool:
    """Whether the agent may have done the task although the server saw it fail (it could not
    be asked for the task's final status)."""
    return isinstance(err, AgentUnreachable | Timeout)


async def finish(
    ctx: Ctx,
    *,
    snapshot: dict[str, Any] | None = None,
    volume: dict[str, Any] | None = None,
    settle: bool = True,
) -> None:
    """In one transaction: set the snapshot's and the volume's columns (those given), then (with
    ``settle``) give the volume back its resting status."""
    async with ctx.deps.sessionmaker.begin() as s:
        if snapshot:
            await s.execute(
                update(SnapshotRow)
                .where(SnapshotRow.id == ctx.params["snapshot_id"])
                .values(**snapshot)
            )
        if volume:
            await s.execute(
                update(VolumeRow).where(VolumeRow.id == ctx.params["volume_id"]).values(**volume)
            )
        if settle:
            await settle_status(s, ctx.params["volume_id"])
