"""snapshot.delete: merge a snapshot's data into its children, then drop its file.

Params: ``snapshot_id``, ``volume_id``, ``vm_id`` (the VM using the volume, or None),
``host_id``. Let N be the snapshot, B its backing file. Every file backed by N is rebased onto
B, which copies into it what N held (a block pull: what a reader of the child sees does not
change, and no other branch is touched). When the VM runs and N is under its active file, the
active file is pulled live onto B first (libvirt block pull), after which none of the files
between is open and they are rebased offline. Then N's file is deleted and the tree mended (N's
children get N's parent; the volume's current snapshot moves up if it was N).

One forward step: each agent call is idempotent and its effect is recorded before the next one,
so a retry (or a new delete after a failure) continues where it stopped. On an rbd pool there
is nothing to merge: the Ceph snapshot is removed (``rbd snap rm``) and the tree mended.

Sizes: a child node whose file was rebased gets the size the agent measured after the rebase
(``bytes``; None if not measured) as its ``used_bytes``; the active file pulled or rebased is
no node and has none. On rbd the agent measures every remaining Ceph snapshot after the
removal (Ceph counts the removed snapshot's data in the next one) and those sizes are
recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from corral.api.agent import RbdSnapshotTask, SnapshotDeleteFileTask, SnapshotRebaseTask
from corral.api.errors import CorralError
from corral.api.snapshots import SnapshotStatus
from corral.server.db.tables import SnapshotRow, VolumeRow
from corral.server.identity import quotas
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_common import (
    CEPH_POOLS,
    active_chain,
    backings,
    file_ref,
    finish,
    load_snapshot,
    vm_is_live,
)
from corral.server.workflows.snapshot_create import measured
from corral.server.workflows.vm_common import repeatable_task
from corral.server.workflows.volume_common import (
    load_volume,
    set_volume,
    settle_status,
    volume_ref,
)


async def _remeasure(ctx: Ctx, volume_id: str, sizes: dict[str, Any]) -> None:
    """Record the sizes of the volume's Ceph snapshots measured after a removal (Ceph counts
    the removed one's data in the next one)."""
    if not sizes:
        return
    async with ctx.deps.sessionmaker.begin() as s:
        for name, size in sizes.items():
            if isinstance(size, int):
                await s.execute(
                    update(SnapshotRow)
                    .where(SnapshotRow.volume_id == volume_id, SnapshotRow.file == name)
                    .values(used_bytes=size)
                )


async def _merge(ctx: Ctx) -> dict[str, Any]:
    snap, vol, pool = await load_snapshot(ctx)
    host, vm_id = ctx.params["host_id"], ctx.params["vm_id"]
    if pool.type in CEPH_POOLS:  # Ceph's snapshots stand alone: nothing to merge
        await ctx.progress(50, "removing the Ceph snapshot")
        task = RbdSnapshotTask(
            op="remove", volume=volume_ref(ctx.deps.secrets, vol, pool), snap=snap.file
        )
        result = await repeatable_task(ctx, host, "rbd-remove", task)
        await _remeasure(ctx, vol.id, result.get("sizes") or {})
        await _unlink(ctx, vol, snap)
        return {"pulled_live": 0, "rebased": 0}
    n_file, base = snap.file, snap.backing
    async with ctx.deps.sessionmaker() as s:
        files = await backings(s, vol.id)
    pulled = 0
    if n_file in active_chain(vol, files) and await vm_is_live(ctx, vm_id):
        await ctx.progress(20, "merging into the running disk")
        payload = SnapshotRebaseTask(
            volume=file_ref(ctx, vol, pool, vol.pool_name),
            name=vol.pool_name,
            backing=base,
            vm_id=vm_id,
            live=True,
        )
        await repeatable_task(ctx, host, "pull", payload)
        await set_volume(ctx, backing_name=base)
        pulled = 1
    vol, pool = await load_volume(ctx)
    children = [f for f, b in files.items() if b == n_file]
    if vol.backing_name == n_file:
        children.append(vol.pool_name)
    for i, child in enumerate(children):
        await ctx.progress(30 + 50 * i // max(1, len(children)), f"merging into {child}")
        payload = SnapshotRebaseTask(
            volume=file_ref(ctx, vol, pool, child), name=child, backing=base, vm_id=vm_id
        )
        rebased = await repeatable_task(ctx, host, f"rebase-{i}", payload)
        if child == vol.pool_name:  # the active file: no node, no size to keep
            await set_volume(ctx, backing_name=base)
        else:  # a child node's file: it now holds N's data too
            async with ctx.deps.sessionmaker.begin() as s:
                await s.execute(
                    update(SnapshotRow)
                    .where(SnapshotRow.volume_id == vol.id, SnapshotRow.file == child)
                    .values(backing=base, used_bytes=measured(rebased.get("bytes")))
                )
    await ctx.progress(85, "deleting the snapshot's file")
    payload_del = SnapshotDeleteFileTask(volume=file_ref(ctx, vol, pool, n_file), name=n_file)
    await repeatable_task(ctx, host, "delete-file", payload_del)
    await _unlink(ctx, vol, snap)
    return {"pulled_live": pulled, "rebased": len(children)}


async def _unlink(ctx: Ctx, vol: VolumeRow, snap: SnapshotRow) -> None:
    """Mend the tree without the snapshot (its children get its parent; the volume's current
    snapshot moves up if it was this one), drop its row and give its quota back."""
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(SnapshotRow)
            .where(SnapshotRow.volume_id == vol.id, SnapshotRow.parent_id == snap.id)
            .values(parent_id=snap.parent_id)
        )
        await s.execute(
            update(VolumeRow)
            .where(VolumeRow.id == vol.id, VolumeRow.current_snapshot_id == snap.id)
            .values(current_snapshot_id=snap.parent_id)
        )
        row = await s.get(SnapshotRow, snap.id)
        if row is not None:
            await quotas.adjust(s, row.project_id, snapshots=-1)
            await s.delete(row)
        await settle_status(s, vol.id)


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    why = f"delete failed: {err.message} (deleting it again continues the merge)"
    await finish(ctx, snapshot={"status": SnapshotStatus.error.value, "error": why})


SNAPSHOT_DELETE = Workflow(
    "snapshot.delete",
    steps=(Step("merge", _merge, NO_UNDO),),
    on_failure=_on_failure,
    forward_from="merge",
)
