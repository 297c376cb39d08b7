"""The audit log writer: records are queued at response end and inserted in batches.

``AuditWriter.record`` never waits for the database: it appends to an in-memory queue and, if no
write is in progress, starts one. The write task lingers ``linger_s`` (records arriving meanwhile
join the batch), then inserts everything queued in ONE transaction with one ``executemany``; records
arriving while that transaction runs go to the next one (group commit, as ``JournalWriter`` does).
So a record is in the database about ``linger_s`` + one transaction after its response.

Before inserting, a batch is completed from the database with two batched reads: the project of
each operation a record names (when the request named none), and for login records the user id of
the user name tried (``target_id``; ``actor_id`` too when the login succeeded).

The queue is bounded (``max_queue``). If the database cannot be written (down, locked), the batch
is put back and retried with a growing delay (up to ``MAX_RETRY_S``); once the queue is full, new
records are dropped and counted in ``dropped`` (a warning is logged once per outage, and the count
when writing works again). A batch that fails for another reason is retried record by record and the
records that still fail are dropped (counted, logged): one bad record never blocks the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corral.server.db.tables import OperationRow, UserRow
from corral.server.db.tables_audit import AuditEventRow

log = logging.getLogger("corral.audit")

TABLE: Table = AuditEventRow.__table__  # type: ignore[assignment]
COLUMNS = tuple(c.name for c in TABLE.columns if c.name != "id")
"""The keys of every record handed to ``AuditWriter.record`` (all of them, None when unknown)."""
LOGIN_ACTIONS = frozenset({"auth.login"})
MAX_RETRY_S = 5.0
_TRANSIENT = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unreachable or busy (retry) rather than the batch bad."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _TRANSIENT)


class AuditWriter:
    """Batches audit records into the database; see the module docstring.

    ``engine`` returns the database engine, or None while the server has none (records wait).
    Counters for tests and benchmarks: ``written`` (rows), ``transactions`` (committed batches),
    ``dropped`` (records lost: queue full, or a record the database refused).
    """

    def __init__(
        self,
        engine: Callable[[], AsyncEngine | None],
        *,
        max_queue: int = 10_000,
        max_batch: int = 1_000,
        linger_s: float = 0.02,
        retry_s: float = 0.5,
    ) -> None:
        self._engine = engine
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.retry_s = retry_s
        self._queue: list[dict[str, Any]] = []
        self._inflight = 0
        self._task: asyncio.Task[None] | None = None
        self._hurry = False
        self._failing = False
        self._dropped_in_outage = 0
        self.written = 0
        self.transactions = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Records queued or being written, not yet committed."""
        return len(self._queue) + self._inflight

    def record(self, rec: dict[str, Any]) -> None:
        """Queue one record (keys: ``COLUMNS``). Never blocks and never raises."""
        if self.pending >= self.max_queue:
            self._drop(1)
            return
        self._queue.append(rec)
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name="audit-writer"
                )
            except RuntimeError:  # no running loop: only outside the server (a sync caller)
                self._queue.pop()
                self._drop(1)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued now, without lingering. True if the queue is empty at the end
        (False: the database could not be written within ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._hurry = True
        try:
            while self._queue or (self._task is not None and not self._task.done()):
                if self._task is None or self._task.done():
                    self._task = loop.create_task(self._run(), name="audit-writer")
                left = deadline - loop.time()
                if left <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), left)
            return True
        finally:
            self._hurry = False

    async def close(self, timeout: float = 5.0) -> None:
        """Flush (at most ``timeout`` seconds), then stop; records still queued are counted as
        dropped and logged."""
        done = await self.flush(timeout)
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        lost = self.pending
        if not done and lost:
            log.error("audit log: %d record(s) not written at shutdown", lost)
            self.dropped += lost
        self._queue.clear()
        self._inflight = 0

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._dropped_in_outage += n
        if not self._failing:
            self._failing = True
            log.warning("audit log: queue full (%d records): dropping new records", self.max_queue)

    async def _run(self) -> None:
        delay = self.retry_s
        while self._queue:
            if self.linger_s > 0 and not self._hurry:
                await asyncio.sleep(self.linger_s)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            self._inflight = len(batch)
            try:
                await self._commit(batch)
            except Exception as exc:
                self._inflight = 0
                if not _transient(exc):
                    await self._one_by_one(batch, exc)
                    continue
                self._requeue(batch, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
            else:
                self._inflight = 0
                delay = self.retry_s
                self._recovered()

    async def _one_by_one(self, batch: list[dict[str, Any]], first: Exception) -> None:
        for rec in batch:
            try:
                await self._commit([rec])
            except Exception as exc:
                if _transient(exc):
                    self._requeue([rec], exc)
                    continue
                self.dropped += 1
                log.error("audit log: record refused by the database, dropped: %s %s: %s",
                          rec.get("method"), rec.get("path"), exc)  # fmt: skip
        log.debug("audit log: batch retried record by record after %s", first)

    def _requeue(self, batch: list[dict[str, Any]], exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("audit log: cannot write to the database (%s): retrying", exc)
        self._queue[0:0] = batch
        extra = len(self._queue) - self.max_queue
        if extra > 0:  # keep the oldest: they were first in line
            del self._queue[self.max_queue :]
            self.dropped += extra
            self._dropped_in_outage += extra

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("audit log: writing again; %d record(s) were dropped meanwhile",
                        self._dropped_in_outage)  # fmt: skip
            self._dropped_in_outage = 0

    async def _commit(self, batch: list[dict[str, Any]]) -> None:
        engine = self._engine()
        if engine is None:
            raise sa_exc.OperationalError("audit", None, Exception("no database yet"))
        async with engine.begin() as conn:
            await _complete(conn, batch)
            await conn.execute(insert(TABLE), batch)
        self.written += len(batch)
        self.transactions += 1


async def _complete(conn: AsyncConnection, batch: list[dict[str, Any]]) -> None:
    """Fill in, with one read each, operations' projects and the user ids of logins."""
    ops = {r["operation_id"] for r in batch if r["operation_id"] and not r["project_id"]}
    if ops:
        rows = await conn.execute(
            select(OperationRow.id, OperationRow.project_id).where(OperationRow.id.in_(ops))
        )
        projects = {op_id: project for op_id, project in rows}
        for r in batch:
            if r["operation_id"] in projects and not r["project_id"]:
                r["project_id"] = projects[r["operation_id"]]
    names = {r["actor_name"] for r in batch if r["action"] in LOGIN_ACTIONS and r["actor_name"]}
    if names:
        rows = await conn.execute(select(UserRow.name, UserRow.id).where(UserRow.name.in_(names)))
        users = {name: user_id for name, user_id in rows}
        for r in batch:
            if r["action"] in LOGIN_ACTIONS and r["actor_name"] in users:
                r["target_id"] = users[r["actor_name"]]
                if r["result"] == "success" and not r["actor_id"]:
                    r["actor_id"] = users[r["actor_name"]]
