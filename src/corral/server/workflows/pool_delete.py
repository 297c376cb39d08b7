"""storage_pool.delete with cascade: delete every volume of the pool (files on the pool, rows,
quota), then the pool.

Params: ``pool_id``, ``volumes`` (``[[volume_id, host_id or None], …]``: the host that reaches
each volume created on the pool), ``cluster_ids`` (attached, to tell their agents). The request
refused attached volumes and moved the others to ``deleting``. One forward step per phase:
each volume is forgotten right after its files are gone, so a retry continues with the rest; if
it keeps failing the operation fails, the volumes left are in ``error`` and the pool stays.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from corral.api.errors import CorralError
from corral.server.db.tables import StoragePoolRow, VolumeRow
from corral.server.services.pool_sync import pools_changed
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.volume_delete import delete_from_pool, forget_volume


async def _volumes(ctx: Ctx) -> dict[str, Any]:
    pairs = ctx.params["volumes"]
    for i, (vid, host_id) in enumerate(pairs):
        async with ctx.deps.sessionmaker() as s:
            vol = await s.get(VolumeRow, vid)
            pool = await s.get(StoragePoolRow, ctx.params["pool_id"])
        if vol is None or pool is None:
            continue  # forgotten by an earlier attempt
        await ctx.progress(10 + 80 * i // max(1, len(pairs)), f"deleting volume {vol.name}")
        if vol.instantiated and host_id is not None:
            await delete_from_pool(ctx, vol, pool, host_id, f"volume-{i}")
        async with ctx.deps.sessionmaker.begin() as s:
            row = await s.get(VolumeRow, vid)
            if row is not None:
                await forget_volume(s, row)
    return {"deleted": len(pairs)}


async def _pool(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker.begin() as s:
        pool = await s.get(StoragePoolRow, ctx.params["pool_id"])
        if pool is not None:
            await s.delete(pool)
    pools_changed(ctx.deps, pool_ids=[], cluster_ids=ctx.params["cluster_ids"])
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    ids = [vid for vid, _ in ctx.params["volumes"]]
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(VolumeRow)
            .where(VolumeRow.id.in_(ids))
            .values(status="error", error=f"pool delete failed: {err.message}")
        )


POOL_DELETE = Workflow(
    "storage_pool.delete",
    steps=(Step("volumes", _volumes, NO_UNDO), Step("pool", _pool, NO_UNDO)),
    on_failure=_on_failure,
    forward_from="volumes",
)
