"""Journal writes of workflow runs: grouped per run, and committed together across runs.

A run keeps a ``PendingJournal``: rows to write (in order), changes of its operation row and
statements its steps asked to commit with their ``done`` (``Ctx.write_with_journal``). The engine
commits them with ``JournalWriter.write`` right before the next step's ``do`` (so a step's ``done``
and the next step's ``started`` share one transaction), when a step fails, and at the end of the run.
Writes never read: the run knows which journal rows exist already (UPDATE) and which do not (INSERT).

Group commit: ``write`` returns once its changes are committed. While a transaction is being
written, the writes of other runs queue; the next transaction takes all of them (one transaction
and one ``executemany`` per statement shape instead of one transaction per run). If a grouped
transaction fails, its writes are retried one by one so that one run's bad write fails only that run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from corral.server.db.tables import OperationRow, StepRow
from corral.server.db.types import utcnow

STEPS: Table = StepRow.__table__  # type: ignore[assignment]
Deferred = tuple[Executable, dict[str, Any] | None]
"""A statement a step asked to commit with its ``done`` (``Ctx.write_with_journal``), and its
parameters (None: none)."""
OPERATIONS: Table = OperationRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class JournalRow:
    """One journaled step as read back (``WorkflowEngine.journal``)."""

    idx: int
    name: str
    state: str
    result: dict[str, Any] | None


async def read_journal(conn: AsyncConnection, op_id: str) -> list[JournalRow]:
    """The journal of operation ``op_id`` in step order (one Core SELECT)."""
    rows = await conn.execute(_READ, {"b_op": op_id})
    return [JournalRow(idx, name, state, result) for idx, name, state, result in rows]


_READ = (
    select(STEPS.c.idx, STEPS.c.name, STEPS.c.state, STEPS.c.result)
    .where(STEPS.c.operation_id == bindparam("b_op"))
    .order_by(STEPS.c.idx)
)
_STEP_WHERE = (STEPS.c.operation_id == bindparam("b_op"), STEPS.c.idx == bindparam("b_idx"))
_STEP_DONE = (
    update(STEPS)
    .where(*_STEP_WHERE)
    .values(state=bindparam("state"), result=bindparam("result"), updated_at=bindparam("at"))
)
_STEP_STATE = (
    update(STEPS).where(*_STEP_WHERE).values(state=bindparam("state"), updated_at=bindparam("at"))
)
_OP_UPDATES: dict[tuple[str, ...], Any] = {}


def _op_update(keys: tuple[str, ...]) -> Any:
    """``UPDATE operations SET <keys> WHERE id = :b_id``, built once per set of keys."""
    stmt = _OP_UPDATES.get(keys)
    if stmt is None:
        stmt = (
            update(OPERATIONS)
            .where(OPERATIONS.c.id == bindparam("b_id"))
            .values({k: bindparam(k) for k in keys if k != "b_id"})
        )
        _OP_UPDATES[keys] = stmt
    return stmt


class PendingJournal:
    """What one run has to write: journal rows, operation changes, and which rows exist."""

    def __init__(self, rows: Sequence[JournalRow], op: dict[str, Any] | None = None) -> None:
        self.known = {r.idx for r in rows}
        self.rows: list[tuple[int, str, str, dict[str, Any] | None]] = []
        self.op: dict[str, Any] = dict(op or {})
        self.extra: list[Deferred] = []
        self.progress: tuple[int, str] | None = None  # as last written

    def add(self, idx: int, name: str, state: str, result: dict[str, Any] | None = None) -> None:
        """Journal step ``idx`` as ``state`` (and its ``result`` when given) at the next write."""
        self.rows.append((idx, name, state, result))


@dataclass
class _Write:
    """One run's changes, as parameter sets ready for ``executemany``."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    op: dict[str, Any] | None = None
    extra: list[Deferred] = field(default_factory=list)
    done: asyncio.Future[None] | None = None


class JournalWriter:
    """Commits ``PendingJournal``s; see the module docstring (group commit)."""

    def __init__(self, db: AsyncEngine) -> None:
        self.db = db
        self._queue: list[_Write] = []
        self._flushing = False
        self._task: asyncio.Future[None] | None = None

    async def write(
        self, op_id: str, j: PendingJournal, progress: tuple[int, str] | None = None
    ) -> None:
        """Commit ``j``'s rows, operation changes (plus ``progress`` if it changed) and extra
        statements in one transaction; ``j`` is emptied only once that transaction committed."""
        values = dict(j.op)
        if progress is not None and progress != j.progress and "progress" not in values:
            values["progress"], values["message"] = progress
        if not j.rows and not values and not j.extra:
            return
        w = _Write(extra=list(j.extra))
        known = set(j.known)
        now = utcnow()
        for idx, name, state, result in j.rows:
            if idx in known:
                w.updates.append(
                    {"b_op": op_id, "b_idx": idx, "state": state, "result": result, "at": now}
                )
            else:
                w.inserts.append(
                    {"operation_id": op_id, "idx": idx, "name": name, "state": state,
                     "result": result or {}, "updated_at": now}
                )  # fmt: skip
                known.add(idx)
        if values:
            w.op = {"b_id": op_id, **values}
        w.done = asyncio.get_running_loop().create_future()
        self._queue.append(w)
        if not self._flushing:
            self._flushing = True
            self._task = asyncio.ensure_future(self._flush_all())
        await w.done
        j.known, j.rows, j.op, j.extra = known, [], {}, []
        if "progress" in values:
            j.progress = (values["progress"], values.get("message", ""))

    async def _flush_all(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._commit(batch)
                except Exception:
                    for w in batch:  # isolate the bad write
                        try:
                            await self._commit([w])
                        except Exception as exc:
                            _resolve(w, exc)
                        else:
                            _resolve(w, None)
                else:
                    for w in batch:
                        _resolve(w, None)
        finally:
            self._flushing = False

    async def _commit(self, batch: list[_Write]) -> None:
        async with self.db.begin() as conn:
            await _execute(conn, batch)


def _resolve(w: _Write, exc: BaseException | None) -> None:
    if w.done is not None and not w.done.done():
        if exc is None:
            w.done.set_result(None)
        else:
            w.done.set_exception(exc)


async def _execute(conn: AsyncConnection, batch: list[_Write]) -> None:
    inserts = [row for w in batch for row in w.inserts]
    if inserts:
        await conn.execute(insert(STEPS), inserts)
    with_result = [u for w in batch for u in w.updates if u["result"] is not None]
    without = [
        {k: v for k, v in u.items() if k != "result"}
        for w in batch
        for u in w.updates
        if u["result"] is None
    ]
    if with_result:
        await conn.execute(_STEP_DONE, with_result)
    if without:
        await conn.execute(_STEP_STATE, without)
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for w in batch:
        if w.op is not None:
            shapes.setdefault(tuple(sorted(w.op)), []).append(w.op)
    for keys, params in shapes.items():
        await conn.execute(_op_update(keys), params)
    # Deferred statements: one run's in order; a statement with parameters that is a run's only
    # one is executed once for every run that deferred it (rows of different runs are unrelated).
    grouped: dict[int, tuple[Executable, list[dict[str, Any]]]] = {}
    for w in batch:
        only = w.extra[0] if len(w.extra) == 1 else None
        if only is not None and only[1] is not None:
            grouped.setdefault(id(only[0]), (only[0], []))[1].append(only[1])
            continue
        for extra, extra_params in w.extra:
            await conn.execute(extra, extra_params)
    for extra, params_list in grouped.values():
        await conn.execute(extra, params_list)
