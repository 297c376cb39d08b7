"""vm.snapshot.delete: each node of a whole-VM snapshot merged into its children (one
``snapshot.delete`` operation per volume, one after the other: each takes the VM's lock), then
the memory file removed and the record dropped.

Params: ``vm_snapshot_id``, ``vm_id``. A merge that fails leaves the VM snapshot in ``error``
with the nodes not merged yet; deleting it again goes on from there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from corral.api.agent import VmMemoryTask
from corral.api.errors import CorralError, StorageError, Timeout
from corral.api.operations import OperationStatus
from corral.api.vm_snapshots import VmSnapshotStatus
from corral.server.db.tables import SnapshotRow, VmSnapshotRow, VolumeRow
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import repeatable_task

WAIT_S = 3600.0


async def _merge(ctx: Ctx) -> dict[str, Any]:
    from corral.server.services.snapshots import merge

    vsid = ctx.params["vm_snapshot_id"]
    async with ctx.deps.sessionmaker() as s:
        ids = list(
            await s.scalars(select(SnapshotRow.id).where(SnapshotRow.vm_snapshot_id == vsid))
        )
    for i, sid in enumerate(ids):
        await ctx.progress(10 + 70 * i // len(ids), f"merging node {i + 1} of {len(ids)}")
        async with ctx.deps.sessionmaker() as s:
            snap = await s.get(SnapshotRow, sid)
            vol = await s.get(VolumeRow, snap.volume_id) if snap is not None else None
            if snap is None or vol is None:
                continue  # merged (or its volume deleted) meanwhile
            op = await merge(ctx.deps, s, vol, snap, user_id=ctx.params.get("user_id"))
            await s.commit()
        ctx.deps.runner.launch(op)
        done = await ctx.deps.runner.wait(op.id, timeout=WAIT_S)
        if not done.status.done:
            raise Timeout(f"the merge of node {snap.name!r} is still running", operation=op.id)
        if done.status != OperationStatus.succeeded:
            raise StorageError(
                f"node {snap.name!r} of volume {vol.name!r} could not be merged (operation"
                f" {op.id})",
                operation=op.id,
                volume=vol.name,
            )
    return {}


async def _memory(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker() as s:
        row = await s.get(VmSnapshotRow, ctx.params["vm_snapshot_id"])
    if row is None or row.memory_host_id is None:
        return {}
    await ctx.progress(90, "removing the memory state")
    task = VmMemoryTask(op="delete", vm_id=ctx.params["vm_id"], name=row.id)
    await repeatable_task(ctx, row.memory_host_id, "memory", task)
    return {}


async def _forget(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker.begin() as s:
        row = await s.get(VmSnapshotRow, ctx.params["vm_snapshot_id"])
        if row is not None:
            await s.delete(row)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    why = f"delete failed: {err.message} (delete it again to go on)"
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(VmSnapshotRow)
            .where(VmSnapshotRow.id == ctx.params["vm_snapshot_id"])
            .values(status=VmSnapshotStatus.error.value, error=why)
        )


VM_SNAPSHOT_DELETE = Workflow(
    "vm.snapshot.delete",
    steps=(
        Step("merge", _merge, NO_UNDO),
        Step("memory", _memory, NO_UNDO),
        Step("forget", _forget, NO_UNDO),
    ),
    on_failure=_on_failure,
)
