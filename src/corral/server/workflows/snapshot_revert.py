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
from corral.server.db.tables import SnapshotRow, StoragePoolRow, VolumeRow
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


def revert_task(
    ctx: Ctx,
    snap: SnapshotRow,
    vol: VolumeRow,
    pool: StoragePoolRow,
    *,
    old_active: str,
    new_name: str,
    vm_id: str | None,
) -> RbdSnapshotTask | SnapshotRevertTask:
    """The agent task that makes ``vol`` a new branch from ``snap``: on an rbd pool the image
    rolled back to Ceph's snapshot, else ``new_name`` (an overlay on the snapshot's file) made
    its active file in place of ``old_active``."""
    if pool.type in CEPH_POOLS:
        ref = volume_ref(ctx.deps.secrets, vol, pool)
        return RbdSnapshotTask(op="rollback", volume=ref, snap=snap.file)
    return SnapshotRevertTask(
        volume=file_ref(ctx, vol, pool, old_active),
        target=snap.file,
        new_name=new_name,
        vm_id=vm_id,
    )


def reverted(snap: SnapshotRow, pool: StoragePoolRow, new_name: str) -> dict[str, Any]:
    """The volume's columns once ``revert_task`` has run."""
    volume: dict[str, Any] = {"current_snapshot_id": snap.id}
    if pool.type not in CEPH_POOLS:
        volume.update(pool_name=new_name, backing_name=snap.file)
    return volume


async def _switch(ctx: Ctx) -> dict[str, Any]:
    snap, vol, pool = await load_snapshot(ctx)
    await ctx.progress(30, f"reverting to {snap.name}")
    p = ctx.params
    task = revert_task(
        ctx, snap, vol, pool, old_active=p["old_active"], new_name=p["new_name"], vm_id=p["vm_id"]
    )
    return await repeatable_task(ctx, p["host_id"], "revert", task)


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    snap, _, pool = await load_snapshot(ctx)
    volume = reverted(snap, pool, ctx.params["new_name"])
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
