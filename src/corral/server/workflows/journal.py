"""Journal writes of one workflow run, grouped so that a step costs one transaction, not four.

A run keeps a ``PendingJournal``: rows to write (in order) and changes of its operation row. The
engine commits them with ``write`` right before the next step's ``do`` (so a step's ``done`` and
the next step's ``started`` share one transaction), when a step fails, and at the end of the run.
Writes never read: the run knows which journal rows exist already (UPDATE) and which do not
(INSERT).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.server.db.tables import OperationRow, StepRow
from corral.server.db.types import utcnow

STEPS: Table = StepRow.__table__  # type: ignore[assignment]
OPERATIONS: Table = OperationRow.__table__  # type: ignore[assignment]


class PendingJournal:
    """What one run has to write: journal rows, operation changes, and which rows exist."""

    def __init__(self, rows: list[StepRow], op: dict[str, Any] | None = None) -> None:
        self.known = {r.idx for r in rows}
        self.rows: list[tuple[int, str, str, dict[str, Any] | None]] = []
        self.op: dict[str, Any] = dict(op or {})
        self.progress: tuple[int, str] | None = None  # as last written

    def add(self, idx: int, name: str, state: str, result: dict[str, Any] | None = None) -> None:
        """Journal step ``idx`` as ``state`` (and its ``result`` when given) at the next write."""
        self.rows.append((idx, name, state, result))


async def write(
    sm: async_sessionmaker[AsyncSession],
    op_id: str,
    j: PendingJournal,
    progress: tuple[int, str] | None = None,
) -> None:
    """Commit ``j``'s rows and operation changes (plus ``progress`` if it changed) in ONE
    transaction; ``j`` is emptied only once that transaction committed."""
    values = dict(j.op)
    if progress is not None and progress != j.progress and "progress" not in values:
        values["progress"], values["message"] = progress
    if not j.rows and not values:
        return
    known = set(j.known)
    now = utcnow()
    async with sm.begin() as s:
        for idx, name, state, result in j.rows:
            if idx in known:
                changes: dict[str, Any] = {"state": state, "updated_at": now}
                if result is not None:
                    changes["result"] = result
                await s.execute(
                    update(STEPS)
                    .where(STEPS.c.operation_id == op_id, STEPS.c.idx == idx)
                    .values(**changes)
                )
            else:
                row = {"operation_id": op_id, "idx": idx, "name": name, "state": state}
                await s.execute(insert(STEPS).values(**row, result=result or {}, updated_at=now))
                known.add(idx)
        if values:
            await s.execute(update(OPERATIONS).where(OPERATIONS.c.id == op_id).values(**values))
    j.known, j.rows, j.op = known, [], {}
    if "progress" in values:
        j.progress = (values["progress"], values.get("message", ""))
