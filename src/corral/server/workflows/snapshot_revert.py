"""snapshot.revert: start a new branch of the volume from a snapshot.

Params: ``snapshot_id``, ``volume_id``, ``vm_id`` (stopped, or None), ``host_id``,
``old_active``, ``new_name``. The agent makes ``new_name`` (an overlay on the snapshot's file)
the volume's active file and deletes ``old_active``; atomic with a fixed task id like
``snapshot.create`` (see there for failures). On an rbd pool the image is rolled back to the
Ceph snapshot instead (the image stays the volume's).
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import RbdSnapshotTask, SnapshotRevertTask
from corral.api.errors import CorralError
from corral.api.snapshots import SnapshotStatus
from corral.api.volumes import VolumeStatus
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_common import (
    CEPH_POOLS,
    file_ref,
    finish,
    load_snapshot,
    outcome_unknown,
)
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import volume_ref


async def _switch(ctx: Ctx) -> dict[str, Any]:
    snap, vol, pool = await load_snapshot(ctx)
    await ctx.progress(30, f"reverting to {snap.name}")
    if pool.type in CEPH_POOLS:  # the image rolled back to Ceph's snapshot
        task = RbdSnapshotTask(
            op="rollback", volume=volume_ref(ctx.deps.secrets, vol, pool), snap=snap.file
        )
        return await repeatable_task(ctx, ctx.params["host_id"], "revert", task)
    payload = SnapshotRevertTask(
        volume=file_ref(ctx, vol, pool, ctx.params["old_active"]),
        target=snap.file,
        new_name=ctx.params["new_name"],
        vm_id=ctx.params["vm_id"],
    )
    return await repeatable_task(ctx, ctx.params["host_id"], "revert", payload)


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    snap, _, pool = await load_snapshot(ctx)
    volume: dict[str, Any] = {"current_snapshot_id": snap.id}
    if pool.type not in CEPH_POOLS:
        volume.update(pool_name=ctx.params["new_name"], backing_name=snap.file)
    await finish(ctx, volume=volume, snapshot={"status": SnapshotStatus.ready.value})
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    ready = {"status": SnapshotStatus.ready.value}
    if outcome_unknown(err):  # the volume stays in error (not settled) for an operator
        why = f"revert outcome unknown: {err.message}; check the host"
        await finish(
            ctx,
            snapshot=ready,
            volume={"status": VolumeStatus.error.value, "error": why},
            settle=False,
        )
        return
    await finish(ctx, snapshot=ready)


SNAPSHOT_REVERT = Workflow(
    "snapshot.revert",
    steps=(Step("switch", _switch, NO_UNDO), Step("finalize", _finalize, NO_UNDO)),
    on_failure=_on_failure,
    forward_from="switch",
)
