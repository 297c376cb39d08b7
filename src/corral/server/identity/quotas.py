"""Quota usage: changed in the transaction that creates, resizes or deletes a resource.

``adjust`` adds deltas to a project's usage with ONE conditional UPDATE: positive deltas only pass
while ``used + delta <= limit`` (or no limit), so parallel requests can never overshoot a quota on
SQLite or PostgreSQL; negative deltas (releases) always pass and never go below zero. A project
without a quota row gets one (no limits) on first use.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import QuotaExceeded
from corral.server.db.tables import QUOTA_RESOURCES, QuotaRow


def vm_usage(cpus: int, memory_mb: int, disk_gb: int) -> dict[str, int]:
    """What one VM counts against its project's quota."""
    return {"vms": 1, "vcpus": cpus, "memory_mb": memory_mb, "volume_gb": disk_gb}


async def adjust(s: AsyncSession, project_id: str | None, **deltas: int) -> None:
    """Add ``deltas`` (resource name -> amount, see ``QUOTA_RESOURCES``) to ``project_id``'s usage
    or raise ``QuotaExceeded`` (nothing changed) naming the first resource over its limit.
    Resources without a project (public images, platform objects) count against nothing."""
    deltas = {k: v for k, v in deltas.items() if v}
    if project_id is None or not deltas:
        return
    unknown = set(deltas) - set(QUOTA_RESOURCES)
    if unknown:
        raise ValueError(f"unknown quota resources: {sorted(unknown)}")
    table: Any = QuotaRow.__table__
    values: dict[str, Any] = {}
    conds = []
    for name, d in deltas.items():
        used, limit = table.c[f"{name}_used"], table.c[f"{name}_limit"]
        values[f"{name}_used"] = case((used + d < 0, 0), else_=used + d)
        if d > 0:
            conds.append(or_(limit.is_(None), used + d <= limit))
    stmt = update(table).where(table.c.project_id == project_id, *conds).values(**values)
    for attempt in range(2):
        res = await s.execute(stmt.execution_options(synchronize_session=False))
        if getattr(res, "rowcount", 0):
            return
        row = await s.get(QuotaRow, project_id)
        if row is None and attempt == 0:
            s.add(QuotaRow(project_id=project_id))
            await s.flush()
            continue
        break
    row = await s.get(QuotaRow, project_id, populate_existing=True)
    for name, d in deltas.items():
        limit = getattr(row, f"{name}_limit", None)
        used = getattr(row, f"{name}_used", 0)
        if d > 0 and limit is not None and used + d > limit:
            raise QuotaExceeded(
                f"the project's {name} quota is {limit}: {used} used, {d} more requested",
                resource=name,
                limit=limit,
                used=used,
                requested=d,
            )
    raise QuotaExceeded("the project's quota does not allow this", requested=deltas)


async def usage(s: AsyncSession, project_id: str) -> dict[str, tuple[int | None, int]]:
    """``{resource: (limit, used)}`` of a project (no row: no limits, nothing used)."""
    row = await s.get(QuotaRow, project_id, populate_existing=True)
    return {
        r: (getattr(row, f"{r}_limit"), getattr(row, f"{r}_used")) if row else (None, 0)
        for r in QUOTA_RESOURCES
    }
