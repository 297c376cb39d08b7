"""The storage pools this host uses: the set the server last sent (``pools.sync``), kept on disk,
prepared, and measured.

- ``PoolStore``: ``<data>/pools.json`` (mode 0600: it holds the pools' credentials), written
  atomically (``write_private``), loaded at start; ``digest`` is ``pools_digest`` of the set,
  computed once per change and sent with every heartbeat so that the server notices an agent
  whose set differs from the one it expects (and sends it again).
- ``HostPools``: ``sync`` stores a new set, prepares each pool with its backend (local: its
  directory; nfs: ``corral-volumes``; rbd: nothing) and measures it; ``measure`` (every
  ``pool_report_interval`` in the runtime) measures every stored pool. A pool that fails is
  reported ``ok=false`` with the error's message (never the credentials) and never fails the
  whole; one that failed to prepare is prepared again at the next measurement.
- ``noticeable``: whether a new report differs enough from the last one sent to go with the next
  heartbeat (see ``REPORT_MIN_CHANGE_GB``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from corral.agent.files import write_private
from corral.agent.storage.backend import LunInventory
from corral.agent.storage.volumes import Backends
from corral.api.agent import PoolRef, PoolReport, pools_digest
from corral.api.common import Model
from corral.api.errors import CorralError

log = logging.getLogger(__name__)

REPORT_MIN_CHANGE_GB = 1.0
REPORT_MIN_CHANGE_FRACTION = 0.01
"""A change of a pool's total or free space is noticeable when it is larger than both 1 GiB and
1 % of the pool's total: smaller changes wait for the periodic refresh."""

USAGE_TIMEOUT_S = 60.0
"""How long preparing and measuring one pool may take before it is reported failed."""


class _StoredPools(Model):
    pools: list[PoolRef]


class PoolStore:
    """The pool set of one host (see the module docstring). Used from the event loop, except
    ``write`` run in a worker thread by ``replace``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pools: tuple[PoolRef, ...] = ()
        self.digest = pools_digest(())
        self.generation = 0
        """Incremented by every change of the set (a measurement of an older set is dropped)."""
        self.corrupt = False

    @property
    def pools(self) -> tuple[PoolRef, ...]:
        return self._pools

    def load(self) -> None:
        """Read ``pools.json``; absent is no pool; unreadable is no pool too (``corrupt``): the
        server notices the digest and sends the set again."""
        self.corrupt = False
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._set(())
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): starting without pools", self.path, exc.strerror)
            self.corrupt = True
            self._set(())
            return
        try:
            stored = _StoredPools.model_validate_json(data)
        except ValidationError:
            log.warning("%s is not a valid pool list: starting without pools", self.path)
            self.corrupt = True
            self._set(())
            return
        self._set(tuple(stored.pools))

    def write(self, pools: Sequence[PoolRef]) -> None:
        """Replace the file atomically (0600); ``StorageError`` if it cannot (then the old set
        stays, on disk and in memory)."""
        body = _StoredPools(pools=list(pools)).model_dump_json(indent=2)
        write_private(self.path, body.encode())
        self._set(tuple(pools))

    async def replace(self, pools: Sequence[PoolRef]) -> None:
        """``write`` in a worker thread (fsyncs off the event loop)."""
        await asyncio.to_thread(self.write, list(pools))

    def _set(self, pools: tuple[PoolRef, ...]) -> None:
        self._pools = pools
        self.digest = pools_digest(pools)
        self.generation += 1


class HostPools:
    """Prepares and measures the pools of a ``PoolStore`` with the host's backends.

    ``on_reports`` is called with every fresh set of reports (the heartbeater's
    ``pool_reports``)."""

    def __init__(
        self,
        *,
        name: str,
        store: PoolStore,
        backends: Backends,
        timeout: float = USAGE_TIMEOUT_S,
        on_reports: Callable[[list[PoolReport]], None] | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.backends = backends
        self.timeout = timeout
        self.on_reports = on_reports
        self._prepared: set[str] = set()
        self._lock = asyncio.Lock()

    @property
    def digest(self) -> str:
        return self.store.digest

    async def sync(self, pools: Sequence[PoolRef]) -> list[PoolReport]:
        """Store ``pools`` as the host's set (the others are forgotten), prepare each and measure
        it. Raises only if the set cannot be stored (``StorageError``)."""
        async with self._lock:
            await self.store.replace(pools)
            self._prepared.clear()
            reports = await self._measure(self.store.pools)
        log.info(
            "%s: %d storage pool(s) synced (%d ok)",
            self.name,
            len(reports),
            sum(r.ok for r in reports),
        )
        self._publish(reports)
        return reports

    async def measure(self) -> list[PoolReport] | None:
        """Reports of every stored pool (pools not prepared yet are prepared first); None if the
        set changed meanwhile (the sync that changed it reported already)."""
        generation = self.store.generation
        reports = await self._measure(self.store.pools)
        if self.store.generation != generation:
            return None
        self._publish(reports)
        return reports

    def _publish(self, reports: list[PoolReport]) -> None:
        if self.on_reports is not None:
            self.on_reports(reports)

    async def _measure(self, pools: Sequence[PoolRef]) -> list[PoolReport]:
        if not pools:
            return []
        return list(await asyncio.gather(*(self._one(p) for p in pools)))

    async def _one(self, pool: PoolRef) -> PoolReport:
        try:
            async with asyncio.timeout(self.timeout):
                backend = self.backends.for_pool(pool)
                if pool.id not in self._prepared:
                    await backend.prepare(pool)
                    self._prepared.add(pool.id)
                usage = await backend.usage(pool)
                luns = None
                if pool.type == "iscsi" and isinstance(backend, LunInventory):
                    luns = await backend.luns(pool)
        except CorralError as exc:
            error = exc.message
        except TimeoutError:
            error = f"pool {pool.id} did not answer within {self.timeout:g} s"
        except Exception as exc:  # a backend bug must not stop the reports of the other pools
            log.exception("%s: measuring pool %s failed", self.name, pool.id)
            error = f"internal error: {type(exc).__name__}"
        else:
            return PoolReport(
                pool_id=pool.id,
                ok=True,
                total_gb=round(usage.total_gb, 3),
                free_gb=round(usage.free_gb, 3),
                luns=luns,
            )
        return PoolReport(pool_id=pool.id, ok=False, error=_scrub(error, pool.credentials))


def _scrub(message: str, secret: str | None) -> str:
    """``message`` without the pool's credentials (backends never put them there; belt and
    braces for a message quoting a tool's output)."""
    if secret:
        # the whole secret, and the secret half of CHAP's ``user:secret``
        for part in (secret, secret.strip(), secret.partition(":")[2]):
            if len(part) >= 4:
                message = message.replace(part, "***")
    return message


def noticeable(old: PoolReport, new: PoolReport) -> bool:
    """Whether ``new`` must be sent although ``old`` was: ``ok`` or ``error`` changed, or the
    total or free space moved by more than ``REPORT_MIN_CHANGE_GB`` and more than
    ``REPORT_MIN_CHANGE_FRACTION`` of the total."""
    if old.ok != new.ok or old.error != new.error or old.luns != new.luns:
        return True
    threshold = max(REPORT_MIN_CHANGE_GB, REPORT_MIN_CHANGE_FRACTION * max(old.total_gb, 0.0))
    return (
        abs(new.total_gb - old.total_gb) > threshold or abs(new.free_gb - old.free_gb) > threshold
    )


def reports_due(sent: dict[str, PoolReport] | None, reports: Sequence[PoolReport] | None) -> bool:
    """Whether ``reports`` (the latest, None: none measured yet) must go with the next beat,
    given those the server accepted last (``sent``, None: none since start or attach): a pool
    appeared or vanished, or one changed noticeably (``noticeable``)."""
    if reports is None:
        return False
    if sent is None or {r.pool_id for r in reports} != set(sent):
        return True
    return any(noticeable(sent[r.pool_id], r) for r in reports)
