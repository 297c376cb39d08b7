"""What whole-VM snapshot workflows share: loading the records, memory state files."""

from __future__ import annotations

import logging

from sqlalchemy import select

from corral.api.agent import VmMemoryTask
from corral.api.errors import CorralError
from corral.server.db.tables import VmSnapshotRow
from corral.server.workflows.engine import Ctx
from corral.server.workflows.vm_common import repeatable_task

log = logging.getLogger(__name__)


async def delete_memory_files(ctx: Ctx, vm_id: str) -> None:
    """Remove the memory state files of the VM's whole-VM snapshots from their hosts (the VM is
    being deleted). A host that cannot be reached keeps its file (logged: ``<data>/memory/
    <snapshot id>.mem``); the delete goes on."""
    async with ctx.deps.sessionmaker() as s:
        rows = list(
            await s.scalars(
                select(VmSnapshotRow).where(
                    VmSnapshotRow.vm_id == vm_id, VmSnapshotRow.memory_host_id.is_not(None)
                )
            )
        )
    for i, row in enumerate(rows):
        assert row.memory_host_id is not None  # selected so
        task = VmMemoryTask(op="delete", vm_id=vm_id, name=row.id)
        try:
            await repeatable_task(ctx, row.memory_host_id, f"memory-{i}", task)
        except CorralError as err:
            log.warning(
                "vm %s: memory file of snapshot %s left on host %s: %s",
                vm_id,
                row.id,
                row.memory_host_id,
                err.message,
            )
