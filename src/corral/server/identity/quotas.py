"""Quota usage: changed in the transaction that creates, resizes or deletes a resource.

``adjust`` adds deltas to a project's usage with ONE conditional UPDATE: positive deltas only pass
while ``used + delta <= limit`` (or no limit), so parallel requests can never overshoot a quota on
SQLite or PostgreSQL; negative deltas (releases) always pass and never go below zero. A project
without a quota row gets one (no limits) on first use.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, case, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import QuotaExceeded
from corral.server.db.tables import QUOTA_RESOURCES, QuotaRow


def vm_usage(cpus: int, memory_mb: int, disk_gb: int) -> dict[str, int]:
    """What one VM counts against its project's quota."""
    return {"vms": 1, "vcpus": cpus, "memory_mb": memory_mb, "volume_gb": disk_gb}


_STATEMENTS: dict[tuple[tuple[str, bool], ...], Any] = {}


def _adjust_statement(shape: tuple[tuple[str, bool], ...]) -> Any:
    """The conditional UPDATE for deltas of these resources (and signs), built once per shape:
    deltas are bound parameters ``d_<resource>``, the project ``b_project``."""
    stmt = _STATEMENTS.get(shape)
    if stmt is None:
        table: Any = QuotaRow.__table__
        values: dict[str, Any] = {}
        conds = []
        for name, positive in shape:
            used, limit = table.c[f"{name}_used"], table.c[f"{name}_limit"]
            d = bindparam(f"d_{name}", type_=used.type)
            values[f"{name}_used"] = case((used + d < 0, 0), else_=used + d)
            if positive:
                conds.append(or_(limit.is_(None), used + d <= limit))
        stmt = (
            update(table)
            .where(table.c.project_id == bindparam("b_project"), *conds)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        _STATEMENTS[shape] = stmt
    return stmt


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
    stmt = _adjust_statement(tuple((name, d > 0) for name, d in deltas.items()))
    params: dict[str, Any] = {f"d_{name}": d for name, d in deltas.items()}
    params["b_project"] = project_id
    for attempt in range(2):
        res = await s.execute(stmt, params)
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
