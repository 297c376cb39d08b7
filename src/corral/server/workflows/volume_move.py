"""volume.move: a detached volume copied to another pool, then switched to it, then its old copy
deleted.

Params: ``volume_id``, ``host_id`` (a host that reaches both pools: it copies), ``target``
(``pool_id``, ``name``, ``format``, ``host_id``: the volume's host on a local target, else
None), ``source`` (``pool_id``, ``name``, ``format``, ``host_id``: a host that reaches the old
pool). The request moved the volume to ``moving`` and charged the target pool.

- ``copy`` (undo: the copy deleted, the target pool's charge given back): ``volume.copy`` on
  ``host_id``, the data converted to the target's format.
- ``switch`` (the point of no return: retried, never undone; idempotent): one transaction: the
  volume's pool, place, format and host are the target's, the old pool's charge is given back.
- ``cleanup``: the old copy deleted (retried; if it keeps failing, the operation fails naming
  the leftover, and the volume stays usable on its new pool).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from corral.api.agent import VolumeCopyTask, VolumeDeleteTask, VolumeRef
from corral.api.errors import CorralError
from corral.server.db.tables import StoragePoolRow, VolumeRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import load_volume, pool_ref, set_volume, settle


async def _ref(ctx: Ctx, vol: VolumeRow, side: dict[str, Any]) -> VolumeRef:
    async with ctx.deps.sessionmaker() as s:
        pool = await s.get(StoragePoolRow, side["pool_id"])
    assert pool is not None  # a pool with volumes is not deleted
    return VolumeRef(
        volume_id=vol.id,
        pool=pool_ref(ctx.deps.secrets, pool),
        name=side["name"],
        size_gb=vol.size_gb,
        format=side["format"],
    )


async def _copy(ctx: Ctx) -> dict[str, Any]:
    vol, _ = await load_volume(ctx)
    await ctx.progress(10, "copying the volume to its new pool")
    task = VolumeCopyTask(
        source=await _ref(ctx, vol, ctx.params["source"]),
        target=await _ref(ctx, vol, ctx.params["target"]),
    )
    await agent_task(ctx, ctx.params["host_id"], "copy", task)
    return {}


async def _uncopy(ctx: Ctx) -> None:
    vol, _ = await load_volume(ctx)
    task = VolumeDeleteTask(volume=await _ref(ctx, vol, ctx.params["target"]))
    await repeatable_task(ctx, ctx.params["host_id"], "undo-copy", task)
    await _charge(ctx, ctx.params["target"]["pool_id"], -vol.size_gb)


async def _charge(ctx: Ctx, pool_id: str, gb: int) -> None:
    async with ctx.deps.sessionmaker.begin() as s:
        pool = await s.get(StoragePoolRow, pool_id)
        if pool is not None:
            pool.allocated_gb = max(0.0, pool.allocated_gb + gb)


async def _switch(ctx: Ctx) -> dict[str, Any]:
    target, source = ctx.params["target"], ctx.params["source"]
    async with ctx.deps.sessionmaker.begin() as s:
        vol = await s.get(VolumeRow, ctx.params["volume_id"])
        assert vol is not None  # ``moving``: nothing else deletes it
        if vol.pool_id == target["pool_id"]:
            return {}  # switched already (a retry)
        await s.execute(
            update(VolumeRow)
            .where(VolumeRow.id == vol.id)
            .values(
                pool_id=target["pool_id"],
                pool_name=target["name"],
                format=target["format"],
                host_id=target["host_id"],
                backing_name=None,
                base_image_id=None,  # the copy is standalone: on no image of the new pool
            )
        )
        old = await s.get(StoragePoolRow, source["pool_id"])
        if old is not None:
            old.allocated_gb = max(0.0, old.allocated_gb - vol.size_gb)
    await ctx.progress(70, "switched to the new pool")
    return {}


async def _cleanup(ctx: Ctx) -> dict[str, Any]:
    vol, _ = await load_volume(ctx)
    source = ctx.params["source"]
    await ctx.progress(80, "deleting the old copy")
    task = VolumeDeleteTask(volume=await _ref(ctx, vol, source))
    await agent_task(ctx, source["host_id"], "delete-old", task)
    await settle(ctx)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """Rolled back (before ``switch``) or moved but the old copy not deleted: either way the
    volume is usable, ``available`` again; the second case says what is left behind."""
    await settle(ctx)
    if "switch" in ctx.results:
        source = ctx.params["source"]
        await set_volume(
            ctx,
            error=f"moved, but its old copy {source['name']} on pool {source['pool_id']} could"
            f" not be deleted: {err.message}",
        )


VOLUME_MOVE = Workflow(
    "volume.move",
    steps=(
        Step("copy", _copy, _uncopy),
        Step("switch", _switch, NO_UNDO),
        Step("cleanup", _cleanup, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="switch",
)
