"""Project quotas as administrators see them: read a project's limits and usage, change limits.

Usage counters (``QuotaRow.<resource>_used``) are changed only by the quota enforcement
(``identity.quotas.adjust``, in the transaction that creates or deletes a resource); this module
never touches them. A new limit below the current usage is refused unless ``force``, and that
check is part of the UPDATE itself, so a parallel create cannot slip under it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import Conflict
from corral.api.identity import Quota, QuotaItem, QuotaUpdate
from corral.api.operations import Operation
from corral.server.db.tables import QuotaRow
from corral.server.identity.access import require
from corral.server.identity.caller import Caller
from corral.server.identity.quotas import usage as quota_usage
from corral.server.services.context import Services
from corral.server.services.projects import find_project, finish


async def usage(s: AsyncSession, project_id: str) -> Quota:
    """A project's limit and current usage of every resource of ``QUOTA_RESOURCES`` (a project
    without a quota row has no limits and uses nothing)."""
    counts = await quota_usage(s, project_id)
    items = {r: QuotaItem(limit=limit, used=used) for r, (limit, used) in counts.items()}
    return Quota(project_id=project_id, **items)


async def get_quota(*, svc: Services, project: str, caller: Caller) -> Quota:
    """The quota of ``project`` (id or name); needs ``quota:get`` in it."""
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        require(caller, "quota:get", row.id)
        return await usage(s, row.id)


async def update_quota(
    *, svc: Services, project: str, spec: QuotaUpdate, caller: Caller
) -> Operation:
    """Set the limits ``spec`` names (None: unlimited). Platform admins only. A limit below the
    project's usage is ``Conflict`` (reason ``quota_below_usage``, ``context.below``:
    ``{resource: {limit, used}}``) unless ``spec.force``."""
    require(caller, "quota:update", None)
    limits = spec.limits()
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        if await s.get(QuotaRow, row.id) is None:
            s.add(QuotaRow(project_id=row.id))
            await s.flush()
        if limits:
            table: Any = QuotaRow.__table__
            values = {f"{r}_limit": limit for r, limit in limits.items()}
            conds = [
                table.c[f"{r}_used"] <= limit
                for r, limit in limits.items()
                if limit is not None and not spec.force
            ]
            stmt = update(table).where(table.c.project_id == row.id, *conds).values(values)
            res = await s.execute(stmt.execution_options(synchronize_session=False))
            if not getattr(res, "rowcount", 0):
                current = await usage(s, row.id)
                below = {
                    r: {"limit": limit, "used": getattr(current, r).used}
                    for r, limit in limits.items()
                    if limit is not None and getattr(current, r).used > limit
                }
                raise Conflict(
                    "the new limits are below what the project uses now: "
                    + ", ".join(f"{r} {v['used']} used > {v['limit']}" for r, v in below.items())
                    + " (force to set them anyway)",
                    reason="quota_below_usage",
                    below=below,
                )
        return await finish(
            svc,
            s,
            caller,
            type="quota.update",
            kind="project",
            target_id=row.id,
            project_id=row.id,
        )
