"""volume.detach: unplug the volume from the VM (the guest must release it), forget the
attachment.

Params: ``volume_id``, ``vm_id``, ``host_id`` (the VM's host), ``timeout`` (seconds the guest
gets to release the disk). If the unplug fails the VM keeps the disk and the volume stays
``in_use``; once unplugged, forgetting the attachment is retried until it is recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from corral.api.agent import VolumeDetachTask
from corral.api.errors import CorralError
from corral.server.db.tables import VolumeAttachmentRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.volume_common import settle, settle_status


async def _unplug(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(30, "waiting for the guest to release the disk")
    payload = VolumeDetachTask(
        vm_id=ctx.params["vm_id"],
        volume_id=ctx.params["volume_id"],
        timeout=ctx.params.get("timeout", 30.0),
    )
    await agent_task(ctx, ctx.params["host_id"], "volume-detach", payload)
    return {}


async def _forget(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            delete(VolumeAttachmentRow).where(
                VolumeAttachmentRow.volume_id == ctx.params["volume_id"],
                VolumeAttachmentRow.vm_id == ctx.params["vm_id"],
            )
        )
        await settle_status(s, ctx.params["volume_id"])
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    await settle(ctx)


VOLUME_DETACH = Workflow(
    "volume.detach",
    steps=(Step("unplug", _unplug, NO_UNDO), Step("forget", _forget, NO_UNDO)),
    on_failure=_on_failure,
    forward_from="forget",
)
