"""The workflow engine: ordered steps with do/undo, each journaled before the next one runs.

Contract:
- A step's ``do`` returns a JSON-able dict (its result), journaled as ``done`` before the next step.
  Before ``do`` runs, the step is journaled as ``started``.
- On failure, every step journaled ``started`` or ``done`` (the failing one included: its ``do`` may
  have half-happened) is undone in reverse order. ``undo`` functions must therefore be idempotent
  and must tolerate a ``do`` that never ran or ran partly (they read ``ctx.params`` and, when
  present, ``ctx.results``). ``NO_UNDO`` marks a step that needs none (explicitly).
- ``Workflow.forward_from`` names a point of no return: once that step has started, a failure is
  retried (steps from there on must be idempotent) and never rolled back; the operation fails only if
  the retries fail too, leaving the resource for a retried request.
- After a crash, ``recover`` resumes a workflow that passed its point of no return and rolls back
  any other, with the journal as it was.
- Journal writes are grouped (``journal.py``): a step's ``done`` is committed in the same
  transaction as the next step's ``started``, still before the next ``do``; ``Ctx.progress`` is
  kept in memory and written with the next journal commit.
- Fault injection (tests): ``FaultPoints.inject(workflow_type, step, when)`` makes the engine raise
  ``InjectedFault`` before a step's ``do`` or after it (its effect then exists and must be undone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import Executable

from corral.api.errors import AgentUnreachable, CorralError, InjectedFault
from corral.server.db.types import utcnow
from corral.server.workflows.journal import (
    STEPS,
    Deferred,
    JournalRow,
    JournalWriter,
    PendingJournal,
    read_journal,
)

log = logging.getLogger(__name__)

StepFn = Callable[["Ctx"], Awaitable[dict[str, Any] | None]]
UndoFn = Callable[["Ctx"], Awaitable[None]]


async def _no_undo(ctx: Ctx) -> None:
    return None


NO_UNDO: UndoFn = _no_undo
"""Explicit marker for a step whose effect needs no undo (or cannot have one)."""


@dataclass(frozen=True)
class Step:
    name: str
    do: StepFn
    undo: UndoFn


@dataclass(frozen=True)
class Workflow:
    """A named, ordered list of steps. ``on_failure`` runs after a rollback (e.g. to mark state)."""

    type: str
    steps: tuple[Step, ...]
    on_failure: Callable[[Ctx, CorralError], Awaitable[None]] | None = None
    forward_from: str | None = None

    def step_index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.steps) if s.name == name)

    def is_forward(self, idx: int) -> bool:
        """Whether step ``idx`` is at or past the point of no return."""
        return self.forward_from is not None and idx >= self.step_index(self.forward_from)


@dataclass
class Ctx:
    """What a step sees: its operation, inputs, earlier results and the server's services."""

    op_id: str
    params: dict[str, Any]
    results: dict[str, dict[str, Any]]
    deps: Any
    engine: WorkflowEngine
    memo: dict[str, Any] = field(default_factory=dict)
    """Scratch space of one run (e.g. rows read by one step and reused by the next)."""
    deferred: list[Deferred] = field(default_factory=list)

    def write_with_journal(self, stmt: Executable, params: dict[str, Any] | None = None) -> None:
        """Execute ``stmt`` (with ``params``) in the transaction that journals the running step
        ``done`` (before the next step runs); dropped if the step fails. Only for a step's ``do``.
        The same statement object with params, deferred by several runs journaled together, is
        executed once for all of them (``executemany``): build such statements once."""
        self.deferred.append((stmt, params))

    async def progress(self, percent: int, message: str = "") -> None:
        await self.engine.set_progress(self.op_id, percent, message)


When = Literal["before", "after"]


@dataclass
class FaultPoints:
    """Planned failures at workflow steps; consumed when hit."""

    planned: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def inject(self, workflow: str, step: str, when: When = "before", times: int = 1) -> None:
        key = (workflow, step, when)
        self.planned[key] = self.planned.get(key, 0) + times

    def hit(self, workflow: str, step: str, when: When) -> None:
        key = (workflow, step, when)
        left = self.planned.get(key, 0)
        if left:
            if left == 1:
                del self.planned[key]
            else:
                self.planned[key] = left - 1
            raise InjectedFault(f"injected fault {when} step {step} of {workflow}", step=step)

    def clear(self) -> None:
        self.planned.clear()


def as_corral_error(exc: BaseException) -> CorralError:
    if isinstance(exc, CorralError):
        return exc
    log.exception("unexpected error in a workflow step", exc_info=exc)
    return CorralError(f"internal error: {type(exc).__name__}", exception=type(exc).__name__)


UNDO_ATTEMPTS = 3
FORWARD_ATTEMPTS = 3
UNDO_UNREACHABLE_S = 300.0
"""How long an undo keeps asking while the agent is unreachable (a restarting agent, a network
cut): agent tasks carry their id, so asking again is safe, and an agent that comes back within
this time gets its half-done work rolled back instead of leaving the resource in error."""


class WorkflowEngine:
    """Runs workflows and journals them in ``workflow_steps``.

    Progress (``Ctx.progress``) is kept in memory (``live_progress``) and written with the next
    journal commit: it is informational and not worth a transaction of its own.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], deps: Any) -> None:
        self.sessionmaker = sessionmaker
        self.deps = deps
        self.faults = FaultPoints()
        self._live: dict[str, tuple[int, str]] = {}
        self.writer = JournalWriter(sessionmaker.kw["bind"])

    async def _flush(self, op_id: str, j: PendingJournal) -> None:
        await self.writer.write(op_id, j, self._live.get(op_id))

    async def set_progress(self, op_id: str, percent: int, message: str = "") -> None:
        """Record progress in memory; it is written with the operation's next journal commit."""
        self._live[op_id] = (max(0, min(100, percent)), message)

    def live_progress(self, op_id: str) -> tuple[int, str] | None:
        """Progress of an operation running here, possibly newer than the database's."""
        return self._live.get(op_id)

    def forget(self, op_id: str) -> None:
        """Drop the in-memory progress of a finished operation."""
        self._live.pop(op_id, None)

    async def journal(self, op_id: str) -> list[JournalRow]:
        """The operation's journal, in step order."""
        async with self.writer.db.connect() as conn:
            return await read_journal(conn, op_id)

    def context(self, op_id: str, params: dict[str, Any], journal: Sequence[JournalRow]) -> Ctx:
        results = {r.name: dict(r.result or {}) for r in journal if r.state == "done"}
        return Ctx(op_id=op_id, params=params, results=results, deps=self.deps, engine=self)

    async def run(
        self,
        wf: Workflow,
        op_id: str,
        params: dict[str, Any],
        *,
        journal: Sequence[JournalRow] | None = None,
        on_start: dict[str, Any] | None = None,
        on_success: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Run the steps not yet journaled ``done``; on failure roll back and raise the error.

        ``journal``: the operation's journal if the caller read it already. ``on_start`` and
        ``on_success()`` are changes of the operation row, committed with the first journal write
        and with the last step's ``done``."""
        rows = journal if journal is not None else await self.journal(op_id)
        j = PendingJournal(rows, on_start)
        done = {r.idx for r in rows if r.state == "done"}
        ctx = self.context(op_id, params, rows)
        n = len(wf.steps)
        for idx, step in enumerate(wf.steps):
            if idx in done:
                continue
            attempts = FORWARD_ATTEMPTS if wf.is_forward(idx) else 1
            for attempt in range(attempts):
                try:
                    await self._do(wf, ctx, j, idx, step)
                    break
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
                    err = as_corral_error(exc)
                    if attempt + 1 < attempts:
                        log.warning("%s/%s failed, retrying: %s", wf.type, step.name, err)
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    j.add(idx, step.name, "failed")
                    await self._flush(op_id, j)
                    if wf.is_forward(idx):
                        await self._on_failure(wf, ctx, err)
                    else:
                        await self.rollback(wf, op_id, params, err)
                    raise err from exc
            self._live[op_id] = (int((idx + 1) * 100 / n), f"{step.name} done")
        if on_success is not None:
            j.op.update(on_success())
        await self._flush(op_id, j)
        return ctx.results

    async def _do(self, wf: Workflow, ctx: Ctx, j: PendingJournal, idx: int, step: Step) -> None:
        self.faults.hit(wf.type, step.name, "before")
        j.add(idx, step.name, "started")
        await self._flush(ctx.op_id, j)  # with the previous step's done: before this do runs
        ctx.deferred.clear()
        result = await step.do(ctx) or {}
        ctx.results[step.name] = result
        self.faults.hit(wf.type, step.name, "after")
        j.add(idx, step.name, "done", result)
        j.extra.extend(ctx.deferred)
        ctx.deferred.clear()

    async def recover(self, wf: Workflow, op_id: str, params: dict[str, Any]) -> None:
        """Finish a workflow a crash interrupted: resume it past its point of no return, else roll
        it back. Raises the error the operation should record, or returns if it completed."""
        journal = await self.journal(op_id)
        if any(wf.is_forward(r.idx) and r.state != "undone" for r in journal):
            await self.run(wf, op_id, params)
            return
        err = CorralError(
            "the server stopped while this operation ran; its steps were rolled back",
            reason="interrupted",
        )
        await self.rollback(wf, op_id, params, err)
        raise err

    async def _on_failure(self, wf: Workflow, ctx: Ctx, err: CorralError) -> None:
        if wf.on_failure is not None:
            try:
                await wf.on_failure(ctx, err)
            except Exception:
                log.exception("on_failure hook of %s failed", wf.type)

    async def _undo(self, wf: Workflow, step: Step, ctx: Ctx, failures: list[str]) -> bool:
        """Run ``step``'s undo: up to ``UNDO_ATTEMPTS`` tries, or while the agent is unreachable
        until ``UNDO_UNREACHABLE_S`` have passed. False (the failure appended) if it gave up."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        attempt = 0
        while True:
            try:
                await step.undo(ctx)
                return True
            except Exception as exc:
                log.warning("undo of %s/%s failed (%s): %s", wf.type, step.name, attempt, exc)
                if isinstance(exc, AgentUnreachable):
                    deadline = deadline or loop.time() + UNDO_UNREACHABLE_S
                    give_up = loop.time() >= deadline
                else:
                    give_up = attempt >= UNDO_ATTEMPTS - 1
                if give_up:
                    failures.append(f"{step.name}: {exc}")
                    return False
                attempt += 1
                await asyncio.sleep(min(5.0, 0.5 * attempt))

    async def rollback(
        self, wf: Workflow, op_id: str, params: dict[str, Any], err: CorralError
    ) -> list[str]:
        """Undo, in reverse, every step journaled started/done/failed. Returns undo failures."""
        journal = await self.journal(op_id)
        ctx = self.context(op_id, params, journal)
        j = PendingJournal(journal)
        failures: list[str] = []
        for row in reversed(journal):
            if row.state not in ("started", "done", "failed") or row.idx >= len(wf.steps):
                continue
            step = wf.steps[row.idx]
            if step.undo is NO_UNDO:
                j.add(row.idx, row.name, "undone")
                await self._flush(op_id, j)
                continue
            if await self._undo(wf, step, ctx, failures):
                j.add(row.idx, row.name, "undone")
            else:
                j.add(row.idx, row.name, "undo_failed")
            await self._flush(op_id, j)
        if failures:
            err.context["rollback_failures"] = failures
        await self._on_failure(wf, ctx, err)
        return failures

    async def prejournal(
        self, s: AsyncSession, op_id: str, wf: Workflow, results: dict[str, Any]
    ) -> None:
        """Journal steps that the request itself already did (in the request's transaction, after
        its operation row: one Core INSERT)."""
        await s.flush()  # the operation row first, if it is pending in the session
        now = utcnow()
        rows = [
            {"operation_id": op_id, "idx": wf.step_index(name), "name": name, "state": "done",
             "result": result, "updated_at": now}
            for name, result in results.items()
        ]  # fmt: skip
        if rows:
            await s.execute(insert(STEPS), rows)
