"""volume.qos: apply new I/O limits to every VM the volume is attached to, then record them.

Params: ``volume_id``, ``qos`` and ``old_qos`` (``VolumeQos`` dumps), ``attachments`` (list of
``[vm_id, host_id]``). A failure puts the old limits back where the new ones were applied.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import VolumeQosTask
from corral.api.volumes import VolumeQos
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import set_volume


async def _apply_all(ctx: Ctx, qos: dict[str, Any], name: str) -> None:
    for vm_id, host_id in ctx.params["attachments"]:
        payload = VolumeQosTask(
            vm_id=vm_id, volume_id=ctx.params["volume_id"], qos=VolumeQos.model_validate(qos)
        )
        await repeatable_task(ctx, host_id, f"{name}-{vm_id}", payload)


async def _apply(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(30, "applying the I/O limits")
    await _apply_all(ctx, ctx.params["qos"], "volume-qos")
    return {}


async def _restore(ctx: Ctx) -> None:
    await _apply_all(ctx, ctx.params["old_qos"], "undo-volume-qos")


async def _store(ctx: Ctx) -> dict[str, Any]:
    await set_volume(ctx, qos=ctx.params["qos"])
    return {}


VOLUME_QOS = Workflow(
    "volume.qos",
    steps=(Step("apply", _apply, _restore), Step("store", _store, NO_UNDO)),
    forward_from="store",
)
