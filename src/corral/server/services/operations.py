"""Operations: create, run (serialized per resource), wait for, cancel and recover them."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from corral.api.common import Page
from corral.api.errors import CorralError, ErrorBody, NotCancellable, NotFound
from corral.api.operations import Operation, OperationStatus
from corral.server.db.tables import OperationRow
from corral.server.db.types import new_id, utcnow
from corral.server.query import specs
from corral.server.services.listing import ListRequest, get_row, page_of, plan, query_rows
from corral.server.workflows.engine import Workflow, WorkflowEngine
from corral.server.workflows.journal import STEPS, JournalRow

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"

_OPS: Table = OperationRow.__table__  # type: ignore[assignment]
_INSERT_OP = insert(_OPS)
_MODEL_COLUMNS = [
    _OPS.c[name]
    for name in (
        "id", "type", "target_type", "target_id", "status", "progress", "message", "error",
        "created_at", "started_at", "finished_at", "project_id", "user_id",
    )
]  # fmt: skip
"""The columns ``to_model`` reads."""
_GET_OP = select(*_MODEL_COLUMNS).where(_OPS.c.id == bindparam("b_op"))

_RUN_STATE = (
    select(_OPS.c.status, _OPS.c.params, STEPS.c.idx, STEPS.c.name, STEPS.c.state, STEPS.c.result)
    .select_from(_OPS.outerjoin(STEPS, STEPS.c.operation_id == _OPS.c.id))
    .where(_OPS.c.id == bindparam("b_op"))
    .order_by(STEPS.c.idx)
)
"""What a run starts from, in one SELECT: the operation's status and params, and its journal."""


def to_model(row: OperationRow) -> Operation:
    return Operation(
        id=row.id,
        type=row.type,
        target_type=row.target_type,
        target_id=row.target_id,
        status=OperationStatus(row.status),
        progress=row.progress,
        message=row.message,
        error=ErrorBody.model_validate(row.error) if row.error else None,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        project_id=row.project_id,
        user_id=row.user_id,
    )


def _succeeded() -> dict[str, Any]:
    return {"status": OperationStatus.succeeded, "progress": 100, "finished_at": utcnow()}


class _KeyedLocks:
    """One FIFO asyncio lock per resource key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str | None) -> AsyncIterator[None]:
        if key is None:
            yield
            return
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


IDEMPOTENCY_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "corral_idempotency_key", default=None
)
"""The idempotency record of the request being served (set by the HTTP layer): ``create`` stores
it on the first operation the request creates, in the transaction of the change, and clears it."""


def _new_row(
    type: str,
    target_type: str,
    target_id: str | None,
    params: dict[str, Any] | None,
    lock_key: str | None,
    done: bool,
    project_id: str | None,
    user_id: str | None,
) -> dict[str, Any]:
    """A new operation row's columns; takes the request's ``IDEMPOTENCY_KEY`` (once)."""
    now = utcnow()
    values = {
        "id": new_id(),
        "type": type,
        "target_type": target_type,
        "target_id": target_id,
        "lock_key": lock_key,
        "status": OperationStatus.succeeded if done else OperationStatus.queued,
        "progress": 100 if done else 0,
        "message": "",
        "params": params or {},
        "project_id": project_id,
        "user_id": user_id,
        "idempotency_key": IDEMPOTENCY_KEY.get(),
        "created_at": now,
        "started_at": now if done else None,
        "finished_at": now if done else None,
    }
    IDEMPOTENCY_KEY.set(None)
    return values


class OperationRunner:
    """Owns the operations of this server process.

    ``create`` adds a queued operation row to the caller's session (the caller commits, together
    with whatever else the request changed) and ``launch`` starts it after the commit. Operations on
    the same ``lock_key`` run one after another in submission order; others run in parallel.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], engine: WorkflowEngine):
        self.sessionmaker = sessionmaker
        self._db: AsyncEngine = sessionmaker.kw["bind"]
        self.engine = engine
        self.workflows: dict[str, Workflow] = {}
        self._locks = _KeyedLocks()
        self._changed: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._here: set[str] = set()
        """Operations this process runs (queued or running): their waiters need not poll."""

    def register(self, *workflows: Workflow) -> None:
        for wf in workflows:
            self.workflows[wf.type] = wf

    def create(
        self,
        s: AsyncSession,
        *,
        type: str,
        target_type: str,
        target_id: str | None,
        params: dict[str, Any] | None = None,
        lock_key: str | None = None,
        done: bool = False,
        project_id: str | None = None,
        user_id: str | None = None,
    ) -> OperationRow:
        """Add an operation row to ``s``. ``done=True`` records an already finished operation."""
        values = _new_row(type, target_type, target_id, params, lock_key, done, project_id, user_id)
        row = OperationRow(**values)
        s.add(row)
        return row

    async def insert(
        self,
        s: AsyncSession,
        *,
        type: str,
        target_type: str,
        target_id: str | None,
        params: dict[str, Any] | None = None,
        lock_key: str | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
    ) -> OperationRow:
        """``create`` written at once with one Core INSERT in ``s``'s transaction (no ORM unit of
        work); the returned row is not in the session."""
        values = _new_row(
            type, target_type, target_id, params, lock_key, False, project_id, user_id
        )
        await s.execute(_INSERT_OP, values)
        return OperationRow(**values)

    def launch(self, op: OperationRow) -> None:
        """Start running a committed queued operation in the background."""
        wf = self.workflows[op.type]
        self._here.add(op.id)
        task = asyncio.create_task(self._run(op.id, op.lock_key, wf), name=f"op-{op.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set(self, op_id: str, **values: Any) -> None:
        async with self.sessionmaker.begin() as s:
            await s.execute(update(OperationRow).where(OperationRow.id == op_id).values(**values))
        self._notify(op_id)

    def _notify(self, op_id: str) -> None:
        ev = self._changed.pop(op_id, None)
        if ev is not None:
            ev.set()

    async def _run(self, op_id: str, lock_key: str | None, wf: Workflow) -> None:
        try:
            await self._run_locked(op_id, lock_key, wf)
        finally:
            self._here.discard(op_id)
            self._notify(op_id)

    async def _run_locked(self, op_id: str, lock_key: str | None, wf: Workflow) -> None:
        async with self._locks.hold(lock_key):
            async with self._db.connect() as conn:
                rows = (await conn.execute(_RUN_STATE, {"b_op": op_id})).all()
            if not rows or rows[0].status != OperationStatus.queued:
                return  # cancelled while queued
            params = dict(rows[0].params)
            journal = [
                JournalRow(r.idx, r.name, r.state, r.result) for r in rows if r.idx is not None
            ]
            try:
                # "running" is committed with the first journal write, "succeeded" with the last
                await self.engine.run(
                    wf,
                    op_id,
                    params,
                    journal=journal,
                    on_start={"status": OperationStatus.running, "started_at": utcnow()},
                    on_success=_succeeded,
                )
            except CorralError as err:
                log.log(
                    logging.INFO if err.expected else logging.WARNING,
                    "operation %s failed: %s",
                    op_id,
                    err,
                )
                await self._set(
                    op_id,
                    status=OperationStatus.failed,
                    error=err.to_body().model_dump(mode="json"),
                    finished_at=utcnow(),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # pragma: no cover - the engine converts errors
                log.exception("operation %s crashed", op_id)
                body = ErrorBody(code="internal", message=f"internal error: {type(exc).__name__}")
                await self._set(
                    op_id,
                    status=OperationStatus.failed,
                    error=body.model_dump(),
                    finished_at=utcnow(),
                )
            else:
                self._notify(op_id)
            finally:
                self.engine.forget(op_id)

    async def get(self, op_id: str, where: ColumnElement[bool] | None = None) -> Operation:
        """The operation (``NotFound`` if absent or not selected by ``where``).

        Read with one Core SELECT (no ORM session: this is the long-poll's hot read)."""
        stmt = _GET_OP if where is None else _GET_OP.where(where)
        async with self._db.connect() as conn:
            row = (await conn.execute(stmt, {"b_op": op_id})).first()
        if row is None:
            raise NotFound(f"operation {op_id!r} not found", kind="operation", ref=op_id)
        return self._live(to_model(row))  # type: ignore[arg-type]

    def _live(self, op: Operation) -> Operation:
        """``op`` with the progress of its run in this process (newer than the database's)."""
        live = self.engine.live_progress(op.id) if not op.status.done else None
        if live is None:
            return op
        return op.model_copy(update={"progress": live[0], "message": live[1]})

    async def wait(self, op_id: str, timeout: float) -> Operation:
        """The operation once done, or as it is when ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = self._changed.setdefault(op_id, asyncio.Event())
            left = deadline - loop.time()
            if op_id not in self._here or left <= 0:
                # an operation run here is not done while it is in ``_here`` (its run notifies
                # once done, after its last write): no need to read it before it changes
                op = await self.get(op_id)
                if op.status.done or left <= 0:
                    return op
            # an operation run by this process notifies its waiters; one run by another node
            # is polled every second
            poll = left if op_id in self._here else min(left, 1.0)
            try:
                await asyncio.wait_for(ev.wait(), timeout=poll)
            except TimeoutError:
                pass

    async def cancel(self, op_id: str, where: ColumnElement[bool] | None = None) -> Operation:
        """Cancel a queued operation. Running or finished ones raise ``NotCancellable``."""
        async with self.sessionmaker.begin() as s:
            row = await get_row(s, OperationRow, op_id, "operation", by_name=False, where=where)
            if row.status != OperationStatus.queued:
                raise NotCancellable(
                    f"operation {op_id} is {row.status}; only queued operations can be cancelled",
                    status=row.status,
                )
            row.status = OperationStatus.cancelled
            row.finished_at = utcnow()
            wf = self.workflows.get(row.type)
            params = dict(row.params)
        if wf is not None and wf.on_failure is not None:
            from corral.api.errors import OperationCancelled

            ctx = self.engine.context(op_id, params, [])
            await wf.on_failure(ctx, OperationCancelled("cancelled by the user"))
        self._here.discard(op_id)  # done: its waiters read it (its queued run will see it)
        self._notify(op_id)
        return await self.get(op_id)

    async def list(self, req: ListRequest, where: ColumnElement[bool] | None = None) -> Page[Any]:
        """A page of operations (the Query API over ``specs.OPERATIONS``), live progress
        included, among those ``where`` selects."""
        p = plan(specs.OPERATIONS, Operation, req)
        async with self.sessionmaker() as s:
            rows, total = await query_rows(
                s, specs.OPERATIONS, p, req, [] if where is None else [where]
            )
        return page_of([self._live(to_model(r[0])) for r in rows], rows, total, p, req)

    async def recover(self) -> int:
        """At start-up: roll back workflows a crash interrupted; restart queued operations."""
        async with self.sessionmaker() as s:
            rows = list(
                await s.scalars(
                    select(OperationRow)
                    .where(
                        OperationRow.status.in_([OperationStatus.running, OperationStatus.queued])
                    )
                    .order_by(OperationRow.created_at)
                )
            )
        for row in rows:
            wf = self.workflows.get(row.type)
            if row.status == OperationStatus.queued and wf is not None:
                self.launch(row)
                continue
            task = asyncio.create_task(self._rollback_interrupted(row, wf))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _rollback_interrupted(self, row: OperationRow, wf: Workflow | None) -> None:
        async with self._locks.hold(row.lock_key):
            try:
                if wf is None:
                    raise CorralError(f"unknown workflow {row.type}", reason=INTERRUPTED)
                await self.engine.recover(wf, row.id, dict(row.params))
            except CorralError as err:
                self.engine.forget(row.id)
                await self._set(
                    row.id,
                    status=OperationStatus.failed,
                    error=err.to_body().model_dump(mode="json"),
                    finished_at=utcnow(),
                )
            else:
                self.engine.forget(row.id)
                await self._set(row.id, **_succeeded())

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for running operations (tests and orderly shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def count(self, status: OperationStatus) -> int:
        async with self.sessionmaker() as s:
            n = await s.scalar(
                select(func.count()).select_from(OperationRow).where(OperationRow.status == status)
            )
            return int(n or 0)
