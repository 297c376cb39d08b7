"""Reports to the server: the heartbeat loop and the prompt push of VM lifecycle events.

Both run while the runtime is started, do nothing while the agent is not attached, never raise, and
log a server outage once (``ServerLink.reachable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime

from corral.agent.pools import reports_due
from corral.agent.reporter import ServerLink
from corral.api.agent import Heartbeat, PoolReport, VmEvent, VmEvents, VmReport
from corral.api.errors import CorralError
from corral.api.hosts import HostFacts

log = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/v1/agent/heartbeat"
EVENTS_PATH = "/api/v1/agent/events"

FACTS_REFRESH_S = 30.0
"""How long a change of free disk space alone may wait before a heartbeat carries it."""

POOLS_REFRESH_S = 300.0
"""Pool reports go with a heartbeat when they changed noticeably (``pools.reports_due``), and at
least this often."""

EVENT_WINDOW_S = 0.15
"""How long events are collected after the first one before they are POSTed. A VM's create sends
two (defined: stopped, started: running) a few tens of milliseconds apart: this window makes them
(and those of the host's other VMs) one request, still well within "within seconds"."""

LinkGetter = Callable[[], ServerLink | None]


class Heartbeater:
    """POSTs a ``Heartbeat`` every ``interval`` seconds (+-10 %), and at once after ``wake``.

    ``facts`` are included in the first successful beat and whenever they differ from the last
    facts the server accepted (only free disk space changed: at most every ``FACTS_REFRESH_S``). A beat is skipped (not sent with an empty VM list) when the VMs
    cannot be listed: the server must never conclude that VMs vanished because the driver failed.

    Storage pools: every beat carries ``pools_digest()`` (the digest of the pool set the agent
    holds); the latest reports handed to ``pool_reports`` go with a beat when they differ
    noticeably from those the server last accepted (``pools.reports_due``), or every
    ``POOLS_REFRESH_S``, or after ``wake(resend_facts=True)``.

    Network: every beat carries ``network_digest()`` (the digest of the network state the agent
    holds, ``""`` for none; None: the host has no network plane).
    """

    def __init__(
        self,
        *,
        name: str,
        interval: float,
        link: LinkGetter,
        facts: Callable[[], Awaitable[HostFacts]],
        vms: Callable[[], Awaitable[list[VmReport]]],
        started_at: datetime,
        pools_digest: Callable[[], str | None] = lambda: None,
        network_digest: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.name = name
        self.interval = interval
        self._link = link
        self._facts = facts
        self._vms = vms
        self.started_at = started_at
        self.seq = 0
        self._sent_facts: HostFacts | None = None
        self._sent_facts_at = 0.0
        self._pools_digest = pools_digest
        self._network_digest = network_digest
        self._pool_reports: list[PoolReport] | None = None
        self._sent_pools: dict[str, PoolReport] | None = None
        self._sent_pools_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=f"{self.name} heartbeat")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self, *, resend_facts: bool = False) -> None:
        """Beat now (e.g. after attach); with ``resend_facts`` the next beat carries the facts."""
        if resend_facts:
            self._sent_facts = None
            self._sent_pools = None
        self._wake.set()

    def pool_reports(self, reports: list[PoolReport]) -> None:
        """The latest reports of every stored pool (sent with a beat when due, see the class)."""
        self._pool_reports = list(reports)

    def _pools_due(self) -> list[PoolReport] | None:
        reports = self._pool_reports
        if reports is None or (not reports and not self._sent_pools):
            return None  # nothing measured yet, or no pool and none reported before
        if reports_due(self._sent_pools, reports):
            return reports
        age = asyncio.get_running_loop().time() - self._sent_pools_at
        return reports if age >= POOLS_REFRESH_S else None

    async def beat_once(self) -> bool:
        """Send one heartbeat; True if the server accepted it."""
        link = self._link()
        if link is None:
            return False
        try:
            vms = await self._vms()
        except CorralError as exc:
            log.warning("%s: cannot list VMs, heartbeat skipped: %s", self.name, exc)
            return False
        facts: HostFacts | None = None
        try:
            facts = await self._facts()
        except CorralError as exc:
            log.warning("%s: cannot read host facts: %s", self.name, exc)
        send_facts = facts if facts is not None and self._facts_due(facts) else None
        send_pools = self._pools_due()
        self.seq += 1
        beat = Heartbeat(
            host_id=link.attachment.host_id,
            seq=self.seq,
            agent_started_at=self.started_at,
            facts=send_facts,
            vms=vms,
            pools=send_pools,
            pools_digest=self._pools_digest(),
            network_digest=self._network_digest(),
        )
        try:
            await link.post(HEARTBEAT_PATH, beat, timeout=max(self.interval * 2, 5.0))
        except CorralError as exc:
            link.reachable(False, exc)
            return False
        link.reachable(True)
        now = asyncio.get_running_loop().time()
        if send_facts is not None:
            self._sent_facts = send_facts
            self._sent_facts_at = now
        if send_pools is not None:
            self._sent_pools = {r.pool_id: r for r in send_pools}
            self._sent_pools_at = now
        return True

    def _facts_due(self, facts: HostFacts) -> bool:
        """Whether ``facts`` must go with this beat: at once when anything but the free disk space
        changed; a change of free disk space (every disk created) waits ``FACTS_REFRESH_S``."""
        sent = self._sent_facts
        if sent is None:
            return True
        if facts == sent:
            return False
        if facts.model_copy(update={"disk_gb_free": sent.disk_gb_free}) != sent:
            return True
        return asyncio.get_running_loop().time() - self._sent_facts_at >= FACTS_REFRESH_S

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # +-10 % jitter so that many simulated hosts do not beat in lockstep.
            deadline = loop.time() + self.interval * random.uniform(0.9, 1.1)
            ok = False
            try:
                ok = await self.beat_once()
            except Exception:
                log.exception("%s: heartbeat failed", self.name)
            if not ok:
                # A beat that failed (often: timed out on a busy server) is not retried at once:
                # an overloaded server would only get more abandoned requests to work through.
                deadline = max(deadline, loop.time() + self.interval / 2)
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that arrives
            # just as the event is set, and stop() would wait forever.
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=max(0.0, deadline - loop.time()))
            finally:
                waiter.cancel()
            self._wake.clear()


class EventPusher:
    """Batches VM events for ``window`` seconds after the first one and POSTs them as ``VmEvents``.

    ``push`` is the driver's ``EventSink``. At most ``max_buffer`` events wait (oldest dropped);
    a batch is retried briefly and then dropped, since heartbeats carry the power states anyway.
    """

    RETRY_DELAYS = (0.2, 1.0)

    def __init__(
        self, *, name: str, link: LinkGetter, window: float = EVENT_WINDOW_S, max_buffer: int = 1000
    ) -> None:
        self.name = name
        self.window = window
        self._link = link
        self._queue: asyncio.Queue[VmEvent] = asyncio.Queue(max_buffer)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def push(self, event: VmEvent) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(event)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"{self.name} events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(self.window)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(batch)
            except Exception:
                log.exception("%s: event push failed", self.name)

    async def _send(self, batch: list[VmEvent]) -> None:
        body = VmEvents(events=batch)
        for delay in (*self.RETRY_DELAYS, None):
            link = self._link()
            if link is None:
                return
            try:
                await link.post(EVENTS_PATH, body)
            except CorralError as exc:
                link.reachable(False, exc)
                if delay is None:
                    log.info("%s: dropped %d event(s)", self.name, len(batch))
                    return
                await asyncio.sleep(delay)
            else:
                link.reachable(True)
                self.sent += len(batch)
                return
