"""volume.clone: a new volume made at once from a snapshot of another volume, on the same pool.

Params: ``volume_id`` (the new volume, recorded ``cloning`` and charged by the request),
``snapshot_id``, ``host_id`` (a host that reaches the pool: the source volume's on a local
pool). On file pools the agent copies the snapshot's data, chain flattened, into the new volume
(``volume.copy``): it owes nothing to the snapshot afterwards. On rbd it makes a Ceph
copy-on-write clone of the snapshot (``rbd.snapshot`` op ``clone``): the volume's
``parent_snapshot_id`` keeps the snapshot from being deleted while the clone exists.

- ``make`` (undo: the new volume deleted from the pool).
- ``finalize``: the volume is created on its pool (``instantiated``; a local one bound to the
  host), ``available``. A failure anywhere removes its row and gives quota and pool back.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import RbdSnapshotTask, VolumeCopyTask, VolumeDeleteTask
from corral.api.errors import CorralError, NotFound
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import SnapshotRow, VolumeRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_common import CEPH_POOLS, file_ref
from corral.server.workflows.vm_common import repeatable_task, rollback_incomplete
from corral.server.workflows.volume_common import load_volume, set_volume, volume_ref
from corral.server.workflows.volume_delete import forget_volume


async def _sources(ctx: Ctx) -> tuple[SnapshotRow, VolumeRow]:
    async with ctx.deps.sessionmaker() as s:
        snap = await s.get(SnapshotRow, ctx.params["snapshot_id"])
        source = await s.get(VolumeRow, snap.volume_id) if snap is not None else None
    if snap is None or source is None:
        raise NotFound("the snapshot is gone", snapshot_id=ctx.params["snapshot_id"])
    return snap, source


async def _make(ctx: Ctx) -> dict[str, Any]:
    vol, pool = await load_volume(ctx)
    snap, source = await _sources(ctx)
    await ctx.progress(20, f"making the volume from snapshot {snap.name}")
    target = volume_ref(ctx.deps.secrets, vol, pool)
    if pool.type in CEPH_POOLS:
        src = volume_ref(ctx.deps.secrets, source, pool)
        task: Any = RbdSnapshotTask(op="clone", volume=src, snap=snap.file, target=target)
    else:
        task = VolumeCopyTask(source=file_ref(ctx, source, pool, snap.file), target=target)
    await agent_task(ctx, ctx.params["host_id"], "make", task)
    return {}


async def _unmake(ctx: Ctx) -> None:
    vol, pool = await load_volume(ctx)
    task = VolumeDeleteTask(volume=volume_ref(ctx.deps.secrets, vol, pool))
    await repeatable_task(ctx, ctx.params["host_id"], "undo-make", task)


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    _, pool = await load_volume(ctx)
    host_id = ctx.params["host_id"] if pool.type == "local" else None
    await set_volume(ctx, instantiated=True, host_id=host_id, status=VolumeStatus.available.value)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """The row goes (quota and pool given back) unless the new volume could not be removed
    from the pool: then it stays in ``error`` and deleting it cleans up."""
    if incomplete := await rollback_incomplete(ctx):
        why = f"clone failed: {err.message} (could not undo: {', '.join(incomplete)})"
        await set_volume(ctx, status=VolumeStatus.error.value, error=why)
        return
    async with ctx.deps.sessionmaker.begin() as s:
        vol = await s.get(VolumeRow, ctx.params["volume_id"])
        if vol is not None:
            await forget_volume(s, vol)


VOLUME_CLONE = Workflow(
    "volume.clone",
    steps=(Step("make", _make, _unmake), Step("finalize", _finalize, NO_UNDO)),
    on_failure=_on_failure,
)
