"""vm.snapshot: every volume of the VM snapshotted at one moment (one agent task), optionally with
the VM's memory state.

Params: ``vm_snapshot_id``, ``vm_id``, ``host_id``, ``members`` (per volume: ``snapshot_id``,
``volume_id``, ``old_active``, ``new_name`` (file pools) or ``ceph`` (rbd: the node's ``file``
is its Ceph snapshot name)), ``quiesce``, ``memory``. The request recorded the VM snapshot and
its nodes (``creating``), claimed the volumes and charged the quota. ``snapshot`` is the point
of no return, retried under fresh task ids (the agent's task is idempotent); a definite failure
means nothing changed (the records go, the quota is given back), an unknown one (agent
unreachable) leaves the VM snapshot in ``error`` for an operator.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, update

from corral.api.agent import VmSnapshotDisk, VmSnapshotTask
from corral.api.errors import CorralError
from corral.api.snapshots import SnapshotStatus
from corral.api.vm_snapshots import VmSnapshotStatus
from corral.server.db.tables import SnapshotRow, VmSnapshotRow, VolumeRow
from corral.server.identity import quotas
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_common import file_ref, outcome_unknown
from corral.server.workflows.snapshot_create import measured
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import load_volume, settle_status, volume_ref


async def _record(ctx: Ctx) -> dict[str, Any]:
    return {}  # done by the request


async def _snapshot(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(
        20, "snapshotting the disks" + (" and memory" if ctx.params["memory"] else "")
    )
    disks = []
    async with ctx.deps.sessionmaker() as s:
        snaps = {
            m["snapshot_id"]: await s.get(SnapshotRow, m["snapshot_id"])
            for m in ctx.params["members"]
        }
    for m in ctx.params["members"]:
        vol, pool = await load_volume(ctx, m["volume_id"])
        if m["ceph"]:
            snap = snaps[m["snapshot_id"]]
            assert snap is not None  # recorded by the request, only this operation removes it
            ref = volume_ref(ctx.deps.secrets, vol, pool)
            disks.append(VmSnapshotDisk(volume=ref, ceph_snap=snap.file))
        else:
            ref = file_ref(ctx, vol, pool, m["old_active"])
            disks.append(VmSnapshotDisk(volume=ref, new_name=m["new_name"]))
    task = VmSnapshotTask(
        vm_id=ctx.params["vm_id"],
        disks=disks,
        quiesce=ctx.params["quiesce"],
        memory=ctx.params["vm_snapshot_id"] if ctx.params["memory"] else None,
    )
    return await repeatable_task(ctx, ctx.params["host_id"], "snapshot", task)


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    """Each volume goes on from its new node, each node is ``ready`` with what it takes on
    its pool (``used_bytes``: the agent's ``frozen_bytes`` of its volume; None if not
    measured), the VM snapshot ``ready``."""
    result = ctx.results.get("snapshot") or {}
    frozen = result.get("frozen_bytes")
    sizes: dict[str, Any] = frozen if isinstance(frozen, dict) else {}
    async with ctx.deps.sessionmaker.begin() as s:
        for m in ctx.params["members"]:
            values: dict[str, Any] = {"current_snapshot_id": m["snapshot_id"]}
            if not m["ceph"]:
                values.update(pool_name=m["new_name"], backing_name=m["old_active"])
            await s.execute(
                update(VolumeRow).where(VolumeRow.id == m["volume_id"]).values(**values)
            )
            await s.execute(
                update(SnapshotRow)
                .where(SnapshotRow.id == m["snapshot_id"])
                .values(
                    status=SnapshotStatus.ready.value,
                    error=None,
                    used_bytes=measured(sizes.get(m["volume_id"])),
                )
            )
            await settle_status(s, m["volume_id"])
        await s.execute(
            update(VmSnapshotRow)
            .where(VmSnapshotRow.id == ctx.params["vm_snapshot_id"])
            .values(
                status=VmSnapshotStatus.ready.value,
                error=None,
                quiesced=bool(result.get("quiesced")),
                memory_host_id=ctx.params["host_id"] if ctx.params["memory"] else None,
            )
        )
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    members = ctx.params["members"]
    async with ctx.deps.sessionmaker.begin() as s:
        if outcome_unknown(err):
            why = f"snapshot outcome unknown: {err.message}; check the host, then delete it"
            ids = [m["snapshot_id"] for m in members]
            await s.execute(
                update(SnapshotRow)
                .where(SnapshotRow.id.in_(ids))
                .values(status=SnapshotStatus.error.value, error=why)
            )
            await s.execute(
                update(VmSnapshotRow)
                .where(VmSnapshotRow.id == ctx.params["vm_snapshot_id"])
                .values(status=VmSnapshotStatus.error.value, error=why)
            )
        else:  # nothing changed on the host
            row = await s.get(VmSnapshotRow, ctx.params["vm_snapshot_id"])
            if row is not None:
                await quotas.adjust(s, row.project_id, snapshots=-len(members))
                await s.execute(delete(SnapshotRow).where(SnapshotRow.vm_snapshot_id == row.id))
                await s.delete(row)
        for m in members:
            await settle_status(s, m["volume_id"])


VM_SNAPSHOT_CREATE = Workflow(
    "vm.snapshot",
    steps=(
        Step("record", _record, NO_UNDO),
        Step("snapshot", _snapshot, NO_UNDO),
        Step("finalize", _finalize, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="snapshot",
)
