"""What this server process keeps about the storage pool sets of its agents (never the truth: the
database is): the pool digest each cluster's hosts should hold, and the background pool syncs.

- ``expected``: per cluster, the ``pools_digest`` of the pools attached to it (and not
  disabled), kept ``ttl`` seconds (another server node's pool changes are seen within it) and
  dropped at once by ``invalidate`` when a pool changes in this process. A heartbeat compares
  the agent's digest with it without touching the database (``corral.server.services.pool_sync``);
  a missing entry is loaded once per cluster (``load``) by a background task, never by the
  heartbeat itself.
- syncs: at most one per host in flight (``start``); one asked for while another runs
  (``force``: after a pool change) runs once more when it ends. A sync that failed is not
  retried by heartbeats before a delay that doubles with each failure (1 s … ``MAX_BACKOFF_S``);
  one that succeeded is not repeated before ``SETTLE_S`` (a heartbeat sent before the sync
  ended still carries the old digest). At most ``MAX_CONCURRENT`` run at once.
- ``lock(host_id)``: serializes the writes of one host's reports in this process.
- ``close`` (at server stop, by ``AgentClient.close``) cancels every task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

SETTLE_S = 2.0
MAX_BACKOFF_S = 60.0
MAX_CONCURRENT = 64
"""Syncs running at once (a pool attached to a cluster of 1,000 hosts syncs them in waves)."""

SyncFactory = Callable[[], Awaitable[bool]]


class PoolSyncState:
    """In-memory, per process; see the module docstring."""

    def __init__(self, *, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self.version = 0
        """Incremented by ``invalidate``: a digest computed before it is not cached."""
        self._expected: dict[str, tuple[str, float]] = {}
        self._loading: dict[str, asyncio.Task[str]] = {}
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._again: dict[str, SyncFactory] = {}
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._closed = False

    # -- expected digests ---------------------------------------------------------------------

    def expected(self, cluster_id: str) -> str | None:
        """The cached digest of the cluster's pool set; None if unknown or expired."""
        hit = self._expected.get(cluster_id)
        if hit is None or hit[1] < self.clock():
            return None
        return hit[0]

    def remember(self, cluster_id: str, digest: str, version: int) -> None:
        """Cache ``digest`` unless the pools changed since it was computed (``version``)."""
        if version == self.version:
            if len(self._expected) > 100_000:
                self._expected.clear()
            self._expected[cluster_id] = (digest, self.clock() + self.ttl)

    def invalidate(self) -> None:
        """Pools changed: forget every expected digest (pool changes are rare)."""
        self.version += 1
        self._expected.clear()

    async def load(self, cluster_id: str, compute: Callable[[], Awaitable[str]]) -> str:
        """The cluster's expected digest: cached, or computed once for all who ask meanwhile
        (``compute`` runs in its own task; the result is cached if nothing changed)."""
        hit = self.expected(cluster_id)
        if hit is not None:
            return hit
        task = self._loading.get(cluster_id)
        if task is None:
            version = self.version

            async def run() -> str:
                try:
                    digest = await compute()
                    self.remember(cluster_id, digest, version)
                    return digest
                finally:
                    self._loading.pop(cluster_id, None)

            task = self._own(run(), name=f"pool-digest-{cluster_id}")
            self._loading[cluster_id] = task
        return await asyncio.shield(task)

    # -- syncs ----------------------------------------------------------------------------

    def start(self, host_id: str, factory: SyncFactory, *, force: bool = False) -> bool:
        """Run ``factory`` (a sync of the host; True if it succeeded) in the background unless
        one runs for the host (``force``: then once more after it) or, without ``force``, the
        host's retry delay has not passed. True if it started."""
        if self._closed:
            return False
        if host_id in self._syncing:
            if force:
                self._again[host_id] = factory
            return False
        if not force and self.clock() < self._retry_at.get(host_id, 0.0):
            return False
        self._syncing[host_id] = self._own(self._run(host_id, factory), name=f"pool-sync-{host_id}")
        return True

    def in_flight(self, host_id: str) -> bool:
        return host_id in self._syncing

    async def settle(self, host_id: str) -> None:
        """Until no sync of the host runs (including one queued behind it)."""
        while (task := self._syncing.get(host_id)) is not None:
            await asyncio.wait({task})

    async def _run(self, host_id: str, factory: SyncFactory) -> None:
        ok = False
        try:
            async with self._slots:
                ok = await factory()
        except Exception:
            log.exception("host %s: sync crashed", host_id)
        finally:
            self._syncing.pop(host_id, None)
        self._note(host_id, ok)
        again = self._again.pop(host_id, None)
        if again is not None:
            self.start(host_id, again, force=True)

    def _note(self, host_id: str, ok: bool) -> None:
        if ok:
            self._failures.pop(host_id, None)
            self._retry_at[host_id] = self.clock() + SETTLE_S
            return
        n = self._failures.get(host_id, 0) + 1
        self._failures[host_id] = n
        self._retry_at[host_id] = self.clock() + min(MAX_BACKOFF_S, 2.0 ** (n - 1))

    def failures(self, host_id: str) -> int:
        """How many syncs of the host failed in a row."""
        return self._failures.get(host_id, 0)

    def forget_host(self, host_id: str) -> None:
        """The host was removed: cancel its sync, drop its delays."""
        task = self._syncing.pop(host_id, None)
        if task is not None:
            task.cancel()
        self._again.pop(host_id, None)
        self._retry_at.pop(host_id, None)
        self._failures.pop(host_id, None)

    # -- locks and tasks ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lock(self, host_id: str) -> AsyncIterator[None]:
        """One writer of the host's reports at a time (in this process)."""
        lock, users = self._locks.get(host_id, (asyncio.Lock(), 0))
        self._locks[host_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[host_id]
            if users == 1:
                del self._locks[host_id]
            else:
                self._locks[host_id] = (lock, users - 1)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run ``coro`` in the background, owned here (cancelled by ``close``)."""
        if self._closed:
            coro.close()
            return
        self._own(coro, name=name)

    def _own(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if not isinstance(exc, Exception) or task.get_name().startswith("pool-digest-"):
                return  # a digest load's error is its awaiters' (they log it)
            log.error("%s failed", task.get_name(), exc_info=exc)

    async def close(self) -> None:
        """Cancel every background task and wait for them (server stop)."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._syncing.clear()
        self._again.clear()
        self._loading.clear()
