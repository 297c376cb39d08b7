"""Placement and capacity claims: the scheduler decides, conditional UPDATEs make it stick.

A claim adds a VM's cpus/memory/disk to its host's ``*_used`` only if they stay within
``*_capacity``, in the same statement; parallel requests therefore cannot oversubscribe a host, on
SQLite or PostgreSQL, with one server or several. ``vms.claimed`` makes claim and release idempotent.
Placement reads host views cached for a few seconds (building 1,000 views per request is most of a
placement's cost); the conditional UPDATE keeps the claim correct whatever the cache says.
"""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import NoHostAvailable
from corral.api.hosts import HostStatus
from corral.server.db.tables import ClusterRow, HostRow, VmRow
from corral.server.scheduler.filters import DEFAULT_FILTERS
from corral.server.scheduler.model import HostView, PlacementRequest
from corral.server.scheduler.placement import place, rank
from corral.server.scheduler.weighers import DEFAULT_WEIGHERS

VIEW_TTL_S = 5.0
"""How long placements reuse the host views (claims made here are applied to them at once)."""

CACHED_CANDIDATES = 3
"""Claims tried on the cached views before they are reloaded from the database."""


RANKED_SHAPES = 8
"""VM sizes whose host ranking is kept up to date in the cached views (least recently built
dropped first)."""


@dataclass
class _Ranking:
    """The cached hosts that can take ``req``, best first, kept sorted as claims change them:
    entries ``(-score, host id, view)`` sort exactly as ``scheduler.placement.rank`` orders hosts
    (score descending, ties to the lowest id)."""

    req: PlacementRequest
    entries: list[tuple[float, str, HostView]]
    keys: dict[str, float]
    """Host id -> the ``-score`` of its entry."""

    @classmethod
    def build(cls, req: PlacementRequest, hosts: Iterable[HostView]) -> _Ranking:
        entries = []
        for view in hosts:
            score = _score(req, view)
            if score is not None:
                entries.append((-score, view.id, view))
        entries.sort(key=itemgetter(0, 1))
        return cls(req, entries, {hid: key for key, hid, _ in entries})

    def update(self, view: HostView) -> None:
        """Re-rank one host after its view changed (O(log n) search, one list move)."""
        old = self.keys.pop(view.id, None)
        if old is not None:
            i = bisect_left(self.entries, (old, view.id))
            del self.entries[i]
        score = _score(self.req, view)
        if score is not None:
            insort(self.entries, (-score, view.id, view))
            self.keys[view.id] = -score


def _score(req: PlacementRequest, view: HostView) -> float | None:
    """The scheduler's score of ``view`` for ``req``, None if a filter refuses it: the generic
    arithmetic of ``scheduler.placement`` (its fused default path gives exactly the same)."""
    if any(f(req, view) is not None for f in DEFAULT_FILTERS):
        return None
    score = 0.0
    for weight, weigher in DEFAULT_WEIGHERS:
        score += weight * weigher(req, view)
    return score


@dataclass
class _Views:
    hosts: dict[str, HostView]
    expires: float
    rankings: dict[tuple[int, int, float], _Ranking] = field(default_factory=dict)

    def best(self, req: PlacementRequest, n: int) -> list[HostView]:
        """The ``n`` best hosts for ``req`` (what ``rank`` would list first), from the ranking of
        its size, built at the first request of that size."""
        if req.host_id is not None:
            view = self.hosts.get(req.host_id)
            return [] if view is None or _score(req, view) is None else [view]
        if req.storage_hosts is not None:  # few hosts, not worth a cached ranking
            subset = (self.hosts[h] for h in req.storage_hosts if h in self.hosts)
            return [view for _, _, view in _Ranking.build(req, subset).entries[:n]]
        shape = (req.cpus, req.memory_mb, req.disk_gb)
        ranking = self.rankings.get(shape)
        if ranking is None:
            if len(self.rankings) >= RANKED_SHAPES:
                del self.rankings[next(iter(self.rankings))]
            ranking = self.rankings[shape] = _Ranking.build(req, self.hosts.values())
        return [view for _, _, view in ranking.entries[:n]]

    def replace(self, view: HostView) -> None:
        self.hosts[view.id] = view
        for ranking in self.rankings.values():
            ranking.update(view)


_VIEWS: weakref.WeakKeyDictionary[Any, _Views] = weakref.WeakKeyDictionary()
"""Cached host views per database engine (one per server in tests that run several)."""


def invalidate_views() -> None:
    """Forget the cached host views (hosts were added, removed, changed or disconnected)."""
    _VIEWS.clear()


def _engine_of(s: AsyncSession) -> Any:
    bind: Any = s.bind
    return bind.sync_engine if bind is not None else None


async def host_views(s: AsyncSession) -> list[HostView]:
    """Every host as the scheduler sees it, read from the database (one query, no ORM objects)."""
    rows = await s.execute(
        select(
            HostRow.id,
            HostRow.name,
            HostRow.status,
            HostRow.enabled,
            HostRow.facts,
            HostRow.cpus_used,
            HostRow.memory_mb_used,
            HostRow.disk_gb_used,
            ClusterRow.cpu_overcommit,
            ClusterRow.memory_overcommit,
        ).join(ClusterRow, ClusterRow.id == HostRow.cluster_id)
    )
    views = []
    for hid, name, status, enabled, facts, cpus, mem, disk, cpu_oc, mem_oc in rows:
        facts = facts or {}
        views.append(
            HostView(
                id=hid,
                name=name,
                connected=status == HostStatus.connected,
                enabled=enabled,
                cpu_threads=int(facts.get("cpu_threads", 0)),
                memory_mb=int(facts.get("memory_mb", 0)),
                disk_gb=float(facts.get("disk_gb_total", 0.0)),
                cpus_used=cpus,
                memory_mb_used=mem,
                disk_gb_used=disk,
                cpu_overcommit=cpu_oc,
                memory_overcommit=mem_oc,
                vm_count=0,
            )
        )
    return views


async def _views(s: AsyncSession, *, fresh: bool = False) -> _Views:
    key = _engine_of(s)
    cached = _VIEWS.get(key) if key is not None else None
    now = time.monotonic()
    if cached is None or fresh or cached.expires < now:
        cached = _Views({v.id: v for v in await host_views(s)}, now + VIEW_TTL_S)
        if key is not None:
            _VIEWS[key] = cached
    return cached


def _adjust(s: AsyncSession, host_id: str, cpus: int, memory_mb: int, disk_gb: float) -> None:
    """Apply a claim (or, negative, a release) made by this process to the cached views."""
    key = _engine_of(s)
    cached = _VIEWS.get(key) if key is not None else None
    view = cached.hosts.get(host_id) if cached is not None else None
    if cached is not None and view is not None:
        cached.replace(
            replace(
                view,
                cpus_used=view.cpus_used + cpus,
                memory_mb_used=view.memory_mb_used + memory_mb,
                disk_gb_used=view.disk_gb_used + disk_gb,
            )
        )


def _claim_statement() -> Any:
    """The claim: one conditional UPDATE, built once (VM size and host are bound parameters)."""
    h: Any = HostRow.__table__
    cpus = bindparam("b_cpus", type_=h.c.cpus_used.type)
    mem = bindparam("b_mem", type_=h.c.memory_mb_used.type)
    disk = bindparam("b_disk", type_=h.c.disk_gb_used.type)
    return (
        update(h)
        .where(
            h.c.id == bindparam("b_host"),
            h.c.status == HostStatus.connected.value,
            h.c.enabled.is_(True),
            h.c.cpus_used + cpus <= h.c.cpus_capacity,
            h.c.memory_mb_used + mem <= h.c.memory_mb_capacity,
            h.c.disk_gb_used + disk <= h.c.disk_gb_capacity,
        )
        .values(
            cpus_used=h.c.cpus_used + cpus,
            memory_mb_used=h.c.memory_mb_used + mem,
            disk_gb_used=h.c.disk_gb_used + disk,
        )
    )


_CLAIM = _claim_statement()


def host_disk_gb(vm: VmRow) -> int:
    """The host disk a VM uses: its root disk's size, or none when its root is a volume on a
    storage pool (the pool's capacity counts it)."""
    return 0 if vm.root_volume_id else vm.disk_gb


async def claim_on(s: AsyncSession, vm: VmRow, host_id: str) -> bool:
    """Claim the VM's resources on ``host_id`` if they fit and the host is connected and enabled;
    False if not (nothing changed). Sets ``vm.host_id`` and ``vm.claimed``: the VM row may be
    written after the claim, in the same transaction (``vms.create_vm`` inserts it so)."""
    disk = host_disk_gb(vm)
    params = {"b_host": host_id, "b_cpus": vm.cpus, "b_mem": vm.memory_mb, "b_disk": disk}
    res = await s.execute(_CLAIM, params)
    if not getattr(res, "rowcount", 0):
        return False
    vm.host_id = host_id  # written by the caller (a VM in the session: at its next flush)
    vm.claimed = True
    _adjust(s, host_id, vm.cpus, vm.memory_mb, disk)
    return True


async def place_and_claim(
    s: AsyncSession,
    vm: VmRow,
    pinned_host_id: str | None,
    storage_hosts: frozenset[str] | None = None,
) -> str:
    """Choose a host for ``vm`` and claim its resources there; ``NoHostAvailable`` says why each
    host was refused.

    The best cached host views (``VIEW_TTL_S``) are tried first, in the scheduler's order (kept
    sorted per VM size as claims change them: ``_Ranking``); the claim itself is a conditional
    UPDATE, so stale views can cost a retry but never oversubscribe a host. When the cached views
    find no host, or their best candidates' claims fail, the views are reloaded and everything is
    decided again on fresh numbers."""
    req = PlacementRequest(
        cpus=vm.cpus,
        memory_mb=vm.memory_mb,
        disk_gb=host_disk_gb(vm),
        host_id=pinned_host_id,
        storage_hosts=storage_hosts,
    )
    for host in (await _views(s)).best(req, CACHED_CANDIDATES):
        if await claim_on(s, vm, host.id):
            return host.id
    views = list((await _views(s, fresh=True)).hosts.values())
    for host in rank(req, views):  # raises, explaining each host, when none passes
        if await claim_on(s, vm, host.id):
            return host.id
    invalidate_views()
    place(req, await host_views(s))  # every candidate raced away: explain with fresh numbers
    raise NoHostAvailable("no host could take the VM: capacity changed while placing it")


async def release(s: AsyncSession, vm_id: str) -> None:
    """Give back the VM's claim (idempotent: does nothing if it holds none)."""
    vm = await s.scalar(select(VmRow).where(VmRow.id == vm_id))
    if vm is None or not vm.claimed or vm.host_id is None:
        return
    res = await s.execute(
        update(VmRow)
        .where(VmRow.id == vm_id, VmRow.claimed.is_(True))
        .values(claimed=False)
        .execution_options(synchronize_session=False)
    )
    if not getattr(res, "rowcount", 0):
        return
    await s.execute(
        update(HostRow)
        .where(HostRow.id == vm.host_id)
        .values(
            cpus_used=HostRow.cpus_used - vm.cpus,
            memory_mb_used=HostRow.memory_mb_used - vm.memory_mb,
            disk_gb_used=HostRow.disk_gb_used - host_disk_gb(vm),
        )
        .execution_options(synchronize_session=False)
    )
    vm.claimed = False
    _adjust(s, vm.host_id, -vm.cpus, -vm.memory_mb, -host_disk_gb(vm))


async def resize_claim(s: AsyncSession, vm: VmRow, cpus: int, memory_mb: int) -> bool:
    """Change a claimed VM's cpus/memory claim on its host if the new size fits."""
    dc, dm = cpus - vm.cpus, memory_mb - vm.memory_mb
    res = await s.execute(
        update(HostRow)
        .where(
            HostRow.id == vm.host_id,
            HostRow.cpus_used + dc <= HostRow.cpus_capacity,
            HostRow.memory_mb_used + dm <= HostRow.memory_mb_capacity,
        )
        .values(cpus_used=HostRow.cpus_used + dc, memory_mb_used=HostRow.memory_mb_used + dm)
        .execution_options(synchronize_session=False)
    )
    if not getattr(res, "rowcount", 0):
        return False
    vm.cpus, vm.memory_mb = cpus, memory_mb
    if vm.host_id is not None:
        _adjust(s, vm.host_id, dc, dm, 0)
    return True
