"""The task registry: idempotent task ids, inline answers or callbacks, per-VM serialization.

Contract of ``TaskRegistry.submit``:
- A task id runs at most once. A duplicate id returns the first task's status (running or final),
  also after an agent restart (statuses are persisted in a ``TaskStore``); the duplicate's payload
  is ignored.
- ``submit`` waits up to ``inline_wait`` seconds. If the task finished, its final status is returned
  and no callback is sent. Otherwise ``running`` is returned and the final status is later handed to
  ``notify`` (which POSTs it to the task's callback URL) exactly once, if there is a callback URL.
- Tasks with the same key (the VM id) run one after the other in submission order; different keys
  run in parallel.
- A task's failure is its status (``failed`` + error body), never an exception of ``submit``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from corral.agent.taskstore import TaskStore
from corral.api.agent import AgentTask, TaskState, TaskStatus
from corral.api.errors import CorralError, NotFound

log = logging.getLogger(__name__)

Runner = Callable[[], Awaitable[dict[str, object]]]
Notify = Callable[[TaskStatus, str], Coroutine[Any, Any, None]]


@dataclass
class _Entry:
    status: TaskStatus
    callback_url: str | None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    callback_wanted: bool = False


class _KeyedLocks:
    """One FIFO lock per key, forgotten when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self, key: str, fn: Runner) -> dict[str, object]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await fn()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class TaskRegistry:
    """Runs agent tasks once each; see the module docstring for the contract."""

    def __init__(self, *, store: TaskStore, notify: Notify, inline_wait: float = 0.5) -> None:
        self.store = store
        self.notify = notify
        self.inline_wait = inline_wait
        self._running: dict[str, _Entry] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._callbacks: set[asyncio.Task[None]] = set()
        self._locks = _KeyedLocks()

    async def submit(self, task: AgentTask, *, key: str, run: Runner) -> TaskStatus:
        """Start ``run`` under ``task.task_id`` (unless known) and answer as the contract says."""
        entry = self._running.get(task.task_id)
        if entry is None:
            stored = self.store.get(task.task_id)
            if stored is not None:
                return stored
            entry = self._start(task, key=key, run=run)
        elif entry.callback_url is None and task.callback_url is not None:
            entry.callback_url = task.callback_url
        waiter = asyncio.ensure_future(entry.done.wait())
        try:
            await asyncio.wait({waiter}, timeout=self.inline_wait)
        finally:
            waiter.cancel()
        if entry.done.is_set():
            return entry.status
        entry.callback_wanted = True
        return entry.status

    def get(self, task_id: str) -> TaskStatus:
        """The task's current status; ``NotFound`` if this agent never saw (or forgot) it."""
        entry = self._running.get(task_id)
        if entry is not None:
            return entry.status
        stored = self.store.get(task_id)
        if stored is None:
            raise NotFound("unknown task", task_id=task_id)
        return stored

    @property
    def running(self) -> int:
        return len(self._running)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for running tasks and callbacks, then cancel the rest.
        Cancelled tasks stay ``running`` in the store and are reported as interrupted by the next
        process; the server can still read finished statuses whose callback was cancelled."""
        pending: set[asyncio.Task[None]] = set()
        if self._workers or self._callbacks:
            _, pending = await asyncio.wait(self._workers | self._callbacks, timeout=timeout)
        for task in pending:
            task.cancel()
        if unfinished := pending & self._workers:
            log.warning("cancelled %d running task(s) at shutdown", len(unfinished))
        if pending:
            await asyncio.wait(pending)

    def _start(self, task: AgentTask, *, key: str, run: Runner) -> _Entry:
        status = TaskStatus(task_id=task.task_id, state=TaskState.running)
        self.store.started(status, task.callback_url)
        entry = _Entry(status=status, callback_url=task.callback_url)
        self._running[task.task_id] = entry
        worker = asyncio.create_task(self._work(entry, key, run), name=f"task {task.task_id}")
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        return entry

    async def _work(self, entry: _Entry, key: str, run: Runner) -> None:
        task_id = entry.status.task_id
        try:
            result = await self._locks.run(key, run)
            final = TaskStatus(task_id=task_id, state=TaskState.succeeded, result=result)
        except CorralError as exc:
            if exc.expected:
                log.info("task %s failed: %s", task_id, exc)
            else:
                log.warning("task %s failed: %s", task_id, exc, exc_info=exc)
            final = TaskStatus(task_id=task_id, state=TaskState.failed, error=exc.to_body())
        except Exception as exc:
            log.exception("task %s crashed", task_id)
            err = CorralError("unexpected error in the agent", exception=type(exc).__name__)
            final = TaskStatus(task_id=task_id, state=TaskState.failed, error=err.to_body())
        try:
            self.store.finished(final)
        except CorralError:
            log.exception("cannot persist the result of task %s", task_id)
        # Publishing the result and reading callback_wanted happen in one step: see submit().
        entry.status = final
        del self._running[task_id]
        entry.done.set()
        if entry.callback_wanted and entry.callback_url is not None:
            callback = asyncio.create_task(self.notify(final, entry.callback_url))
            self._callbacks.add(callback)
            callback.add_done_callback(self._callbacks.discard)
