"""volume.delete: remove the volume from its pool, then its row (giving back quota and pool
allocation).

Params: ``volume_id``, ``host_id`` (a host that reaches the pool). Past the request there is no
way back (``forward_from="unpool"``): the agent's delete is idempotent and retried; if it keeps
failing the volume is left in ``error`` and deleting it again retries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from corral.api.agent import SnapshotDeleteFileTask, VolumeDeleteTask
from corral.api.errors import CorralError
from corral.api.volumes import VolumeRole
from corral.server.db.tables import SnapshotRow, StoragePoolRow, VolumeRow
from corral.server.identity import quotas
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import load_volume, set_volume, volume_ref


async def _unpool(ctx: Ctx) -> dict[str, Any]:
    vol, pool = await load_volume(ctx)
    await ctx.progress(30, "deleting the volume from its pool")
    await delete_from_pool(ctx, vol, pool, ctx.params["host_id"], "volume")
    return {}


async def delete_from_pool(
    ctx: Ctx, vol: VolumeRow, pool: StoragePoolRow, host_id: str, label: str
) -> None:
    """Delete the volume's active file and its snapshots' images on its pool through the agent
    of ``host_id`` (idempotent tasks, named ``<label>-delete``, ``<label>-file-<n>``)."""
    ref = volume_ref(ctx.deps.secrets, vol, pool)
    async with ctx.deps.sessionmaker() as s:
        files = list(
            await s.scalars(select(SnapshotRow.file).where(SnapshotRow.volume_id == vol.id))
        )
    await repeatable_task(ctx, host_id, f"{label}-delete", VolumeDeleteTask(volume=ref))
    if pool.type == "rbd":
        return  # Ceph's snapshots go with the image (``rbd snap purge`` first)
    for i, name in enumerate(files):  # the snapshots' images, once nothing is backed by them
        task = SnapshotDeleteFileTask(volume=ref.model_copy(update={"name": name}), name=name)
        await repeatable_task(ctx, host_id, f"{label}-file-{i}", task)


async def _forget(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker.begin() as s:
        vol = await s.get(VolumeRow, ctx.params["volume_id"])
        if vol is not None:
            await forget_volume(s, vol)
    return {}


async def forget_volume(s: Any, vol: VolumeRow) -> None:
    """Delete the volume's row and its snapshots' rows, giving its size (a data volume's: a
    root volume counts as its VM's disk) and snapshots back to the project's quota and its pool
    (in the caller's transaction)."""
    snaps = list(await s.scalars(select(SnapshotRow).where(SnapshotRow.volume_id == vol.id)))
    for snap in snaps:
        await s.delete(snap)
    size = vol.size_gb if vol.role == VolumeRole.data else 0
    await quotas.adjust(s, vol.project_id, volume_gb=-size, snapshots=-len(snaps))
    pool = await s.get(StoragePoolRow, vol.pool_id)
    if pool is not None:
        pool.allocated_gb = max(0.0, pool.allocated_gb - vol.size_gb)
    await s.delete(vol)


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    await set_volume(ctx, status="error", error=f"delete failed: {err.message}")


VOLUME_DELETE = Workflow(
    "volume.delete",
    steps=(Step("unpool", _unpool, NO_UNDO), Step("forget", _forget, NO_UNDO)),
    on_failure=_on_failure,
    forward_from="unpool",
)
