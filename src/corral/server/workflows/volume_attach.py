"""volume.attach: reserve the device (done in the request), create the volume on its pool if it
is its first use, plug it into the VM, mark it in use.

Params: ``volume_id``, ``vm_id``, ``host_id`` (the VM's host), ``device``, ``instantiate``
(whether this operation creates the volume on the pool). Every step can be undone: a failure
leaves the volume as it was (not created on the pool if it was not, not attached) and frees the
device.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from corral.api.agent import VolumeAttachTask, VolumeCreateTask, VolumeDeleteTask, VolumeDetachTask
from corral.api.errors import CorralError, NotFound
from corral.server.db.tables import ImageRow, StoragePoolRow, VolumeAttachmentRow, VolumeRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import image_ref, repeatable_task, rollback_incomplete
from corral.server.workflows.volume_common import (
    data_disk,
    load_volume,
    set_volume,
    settle,
    settle_status,
    volume_ref,
)


async def _reserve(ctx: Ctx) -> dict[str, Any]:
    return {}  # done by the request: the attachment row holds the device, status ``attaching``


async def _unreserve(ctx: Ctx) -> None:
    if await rollback_incomplete(ctx):
        return  # the disk may still be plugged: keep the attachment, the volume goes to error
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            delete(VolumeAttachmentRow).where(
                VolumeAttachmentRow.volume_id == ctx.params["volume_id"],
                VolumeAttachmentRow.vm_id == ctx.params["vm_id"],
            )
        )
        await settle_status(s, ctx.params["volume_id"])


async def _instantiate(ctx: Ctx) -> dict[str, Any]:
    if not ctx.params["instantiate"]:
        return {"created": False}
    vol, pool = await load_volume(ctx)
    await ctx.progress(20, "creating the volume on its pool")
    payload = await volume_create_task(ctx, vol, pool)
    await agent_task(ctx, ctx.params["host_id"], "volume-create", payload)
    host_id = ctx.params["host_id"] if pool.type == "local" else None
    await set_volume(ctx, instantiated=True, host_id=host_id)
    return {"created": True}


async def volume_create_task(ctx: Ctx, vol: VolumeRow, pool: StoragePoolRow) -> VolumeCreateTask:
    """The agent task creating ``vol`` on its pool, a copy of its image if it has one."""
    image = None
    if vol.image_id is not None:
        async with ctx.deps.sessionmaker() as s:
            img = await s.get(ImageRow, vol.image_id)
        if img is None:
            raise NotFound(f"image {vol.image_id} not found", kind="image", ref=vol.image_id)
        image = image_ref(img)
    return VolumeCreateTask(volume=volume_ref(ctx.deps.secrets, vol, pool), image=image)


async def _uninstantiate(ctx: Ctx) -> None:
    if not ctx.params["instantiate"] or await rollback_incomplete(ctx):
        return  # never delete a volume that may still be plugged into the VM
    vol, pool = await load_volume(ctx)
    payload = VolumeDeleteTask(volume=volume_ref(ctx.deps.secrets, vol, pool))
    await repeatable_task(ctx, ctx.params["host_id"], "undo-volume-create", payload)
    await set_volume(ctx, instantiated=False, host_id=None)


async def _plug(ctx: Ctx) -> dict[str, Any]:
    vol, pool = await load_volume(ctx)
    await ctx.progress(60, f"attaching as {ctx.params['device']}")
    disk = data_disk(ctx.deps.secrets, vol, pool, ctx.params["device"])
    payload = VolumeAttachTask(vm_id=ctx.params["vm_id"], disk=disk)
    await agent_task(ctx, ctx.params["host_id"], "volume-attach", payload)
    return {}


async def _unplug(ctx: Ctx) -> None:
    payload = VolumeDetachTask(vm_id=ctx.params["vm_id"], volume_id=ctx.params["volume_id"])
    await repeatable_task(ctx, ctx.params["host_id"], "undo-volume-attach", payload)


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    await settle(ctx)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    if incomplete := await rollback_incomplete(ctx):
        why = f"attach failed: {err.message} (could not undo: {', '.join(incomplete)})"
        await set_volume(ctx, status="error", error=why)


VOLUME_ATTACH = Workflow(
    "volume.attach",
    steps=(
        Step("reserve", _reserve, _unreserve),
        Step("instantiate", _instantiate, _uninstantiate),
        Step("plug", _plug, _unplug),
        Step("finalize", _finalize, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="finalize",
)
