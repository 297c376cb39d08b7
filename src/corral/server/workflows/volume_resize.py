"""volume.resize: grow a volume that exists on its pool (live when its VM runs).

Params: ``volume_id``, ``size_gb``, ``old_size_gb``, ``host_id`` (the attached VM's host or a
host that reaches the pool), ``vm_id`` (the attached VM, or None). The request recorded the new
size and charged the quota and the pool; a failed grow gives both back.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import VolumeResizeTask
from corral.api.errors import CorralError
from corral.server.db.tables import StoragePoolRow, VolumeRow
from corral.server.identity import quotas
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.volume_common import load_volume, settle, volume_ref


async def _claim(ctx: Ctx) -> dict[str, Any]:
    return {}  # done by the request: size, quota and pool allocation


async def _unclaim(ctx: Ctx) -> None:
    delta = ctx.params["size_gb"] - ctx.params["old_size_gb"]
    async with ctx.deps.sessionmaker.begin() as s:
        vol = await s.get(VolumeRow, ctx.params["volume_id"])
        if vol is None or vol.size_gb != ctx.params["size_gb"]:
            return
        vol.size_gb = ctx.params["old_size_gb"]
        await quotas.adjust(s, vol.project_id, volume_gb=-delta)
        pool = await s.get(StoragePoolRow, vol.pool_id)
        if pool is not None:
            pool.allocated_gb = max(0.0, pool.allocated_gb - delta)


async def _grow(ctx: Ctx) -> dict[str, Any]:
    vol, pool = await load_volume(ctx)
    await ctx.progress(40, f"growing to {ctx.params['size_gb']} GiB")
    payload = VolumeResizeTask(
        volume=volume_ref(ctx.deps.secrets, vol, pool),
        size_gb=ctx.params["size_gb"],
        vm_id=ctx.params.get("vm_id"),
    )
    await agent_task(ctx, ctx.params["host_id"], "volume-resize", payload)
    return {}


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    await settle(ctx)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    await settle(ctx)


VOLUME_RESIZE = Workflow(
    "volume.resize",
    steps=(
        Step("claim", _claim, _unclaim),
        Step("grow", _grow, NO_UNDO),
        Step("finalize", _finalize, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="finalize",
)
