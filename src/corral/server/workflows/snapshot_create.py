"""snapshot.create: freeze the volume's active file and go on in a new overlay (on an rbd pool:
a Ceph snapshot of the image, param ``ceph``; the image stays the volume's).

Params: ``snapshot_id``, ``volume_id``, ``vm_id`` (the VM using the volume, or None),
``host_id``, ``old_active`` (the file being frozen), ``new_name`` (the new overlay), ``quiesce``.
The request recorded the snapshot (``creating``) and charged the quota. ``freeze`` is the point
of no return, retried under fresh task ids (the agent's task is idempotent: one that switched the
VM to the new overlay but could not record it finishes on the retry); a definite failure means
nothing changed (the record goes, the quota is given back), an unknown one (agent unreachable)
leaves the snapshot in ``error`` for an operator. ``finalize`` records the node's ``used_bytes``
from the agent's result (file pools: ``frozen_bytes``, rbd: ``bytes``).
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import RbdSnapshotTask, SnapshotCreateTask
from corral.api.errors import CorralError
from corral.api.snapshots import SnapshotStatus
from corral.server.db.tables import SnapshotRow
from corral.server.identity import quotas
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_common import file_ref, finish, outcome_unknown
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import load_volume, settle_status, volume_ref


async def _record(ctx: Ctx) -> dict[str, Any]:
    return {}  # done by the request


async def _freeze(ctx: Ctx) -> dict[str, Any]:
    vol, pool = await load_volume(ctx)
    await ctx.progress(30, "freezing the volume")
    if ctx.params.get("ceph"):  # Ceph's own snapshot: the image stays the active one
        async with ctx.deps.sessionmaker() as s:
            snap = await s.get(SnapshotRow, ctx.params["snapshot_id"])
        assert snap is not None  # recorded by the request, only this operation removes it
        task = RbdSnapshotTask(
            op="create", volume=volume_ref(ctx.deps.secrets, vol, pool), snap=snap.file
        )
        return await repeatable_task(ctx, ctx.params["host_id"], "freeze", task)
    payload = SnapshotCreateTask(
        volume=file_ref(ctx, vol, pool, ctx.params["old_active"]),
        new_name=ctx.params["new_name"],
        vm_id=ctx.params["vm_id"],
        quiesce=ctx.params["quiesce"],
    )
    return await repeatable_task(ctx, ctx.params["host_id"], "freeze", payload)


def measured(value: object) -> int | None:
    """A size an agent reported (``frozen_bytes``, ``bytes``) as ``SnapshotRow.used_bytes``:
    a non-negative int, else None (not measured, or an agent that does not measure)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    """The volume goes on from the new node (a file pool: on the new overlay) and the node is
    ``ready`` with what it takes on the pool (``used_bytes``: the agent's ``frozen_bytes``,
    Ceph's ``bytes``; None if the agent could not measure it)."""
    freeze = ctx.results.get("freeze") or {}
    volume: dict[str, Any] = {"current_snapshot_id": ctx.params["snapshot_id"]}
    if ctx.params.get("ceph"):
        used = measured(freeze.get("bytes"))
    else:
        volume.update(pool_name=ctx.params["new_name"], backing_name=ctx.params["old_active"])
        used = measured(freeze.get("frozen_bytes"))
    await finish(
        ctx,
        volume=volume,
        snapshot={"status": SnapshotStatus.ready.value, "error": None, "used_bytes": used},
    )
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    if outcome_unknown(err):
        why = f"snapshot outcome unknown: {err.message}; check the host, then retry or delete"
        await finish(ctx, snapshot={"status": SnapshotStatus.error.value, "error": why})
        return
    async with ctx.deps.sessionmaker.begin() as s:  # nothing changed on the host
        snap = await s.get(SnapshotRow, ctx.params["snapshot_id"])
        if snap is not None:
            await quotas.adjust(s, snap.project_id, snapshots=-1)
            await s.delete(snap)
        await settle_status(s, ctx.params["volume_id"])


SNAPSHOT_CREATE = Workflow(
    "snapshot.create",
    steps=(
        Step("record", _record, NO_UNDO),
        Step("freeze", _freeze, NO_UNDO),
        Step("finalize", _finalize, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="freeze",
)
