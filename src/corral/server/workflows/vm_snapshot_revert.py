"""vm.snapshot.revert: every volume of a whole-VM snapshot starts a new branch from its node, then
(with memory) the VM is resumed from the saved state.

Params: ``vm_snapshot_id``, ``vm_id`` (stopped), ``host_id``, ``members`` (per volume:
``snapshot_id``, ``volume_id``, ``old_active``, ``new_name``, ``ceph``), ``memory``. The
request claimed the volumes (``reverting``). Each volume is switched by the same agent task as
``snapshot.revert`` (idempotent, with a fixed name) and recorded at once, so a failure half-way
leaves every volume consistent: those done are reverted, the others as they were, the VM
snapshot in ``error``; reverting again finishes it. There is no way back (a revert discards
what the disks held).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from corral.api.agent import VmMemoryTask
from corral.api.errors import CorralError
from corral.api.snapshots import SnapshotStatus
from corral.api.vm_snapshots import VmSnapshotStatus
from corral.api.vms import PowerState, VmStatus
from corral.server.db.tables import SnapshotRow, VmSnapshotRow, VolumeRow
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_revert import revert_task, reverted
from corral.server.workflows.vm_common import repeatable_task, set_vm
from corral.server.workflows.volume_common import load_volume, settle_status


async def _disks(ctx: Ctx) -> dict[str, Any]:
    members = ctx.params["members"]
    for i, m in enumerate(members):
        await ctx.progress(10 + 60 * i // len(members), f"reverting disk {i + 1} of {len(members)}")
        vol, pool = await load_volume(ctx, m["volume_id"])
        async with ctx.deps.sessionmaker() as s:
            snap = await s.get(SnapshotRow, m["snapshot_id"])
        assert snap is not None  # claimed by the request: no delete runs meanwhile
        task = revert_task(
            ctx,
            snap,
            vol,
            pool,
            old_active=m["old_active"],
            new_name=m["new_name"],
            vm_id=ctx.params["vm_id"],
        )
        await repeatable_task(ctx, ctx.params["host_id"], f"revert-{i}", task)
        values = reverted(snap, pool, m["new_name"])
        async with ctx.deps.sessionmaker.begin() as s:
            await s.execute(update(VolumeRow).where(VolumeRow.id == vol.id).values(**values))
            await s.execute(
                update(SnapshotRow)
                .where(SnapshotRow.id == snap.id)
                .values(status=SnapshotStatus.ready.value)
            )
            await settle_status(s, vol.id)
    return {}


async def _memory(ctx: Ctx) -> dict[str, Any]:
    if not ctx.params["memory"]:
        return {"resumed": False}
    await ctx.progress(80, "resuming the VM from its memory state")
    task = VmMemoryTask(op="restore", vm_id=ctx.params["vm_id"], name=ctx.params["vm_snapshot_id"])
    await repeatable_task(ctx, ctx.params["host_id"], "restore", task)
    await set_vm(ctx, status=VmStatus.running, power_state=PowerState.running, error=None)
    return {"resumed": True}


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(VmSnapshotRow)
            .where(VmSnapshotRow.id == ctx.params["vm_snapshot_id"])
            .values(status=VmSnapshotStatus.ready.value, error=None)
        )
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    why = f"revert failed: {err.message} (revert again to finish it)"
    async with ctx.deps.sessionmaker.begin() as s:
        for m in ctx.params["members"]:
            await s.execute(
                update(SnapshotRow)
                .where(SnapshotRow.id == m["snapshot_id"])
                .values(status=SnapshotStatus.ready.value)
            )
            await settle_status(s, m["volume_id"])
        await s.execute(
            update(VmSnapshotRow)
            .where(VmSnapshotRow.id == ctx.params["vm_snapshot_id"])
            .values(status=VmSnapshotStatus.error.value, error=why)
        )


VM_SNAPSHOT_REVERT = Workflow(
    "vm.snapshot.revert",
    steps=(
        Step("disks", _disks, NO_UNDO),
        Step("memory", _memory, NO_UNDO),
        Step("finalize", _finalize, NO_UNDO),
    ),
    on_failure=_on_failure,
)
