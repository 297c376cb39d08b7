"""Agents know the storage pools of their cluster and report what they see of them.

Convergent: the server never tracks what it sent. Every heartbeat carries the digest of the pool
set the agent holds (``Heartbeat.pools_digest``, ``corral.api.agent.pools_digest``); when it
differs from the digest of the pools the host should use (``expected_pools``: attached to its
cluster, not ``disabled``), the server sends the whole set again (``sync_host``: a ``pools.sync``
task) in the background. Pool changes (create, state or credentials update, attach, detach,
delete) invalidate the expected digests and sync the connected hosts of the affected clusters at
once (``pools_changed``). A failing sync is retried by later heartbeats, with a growing delay.

The heartbeat path stays cheap (500 beats/s at 1,000 hosts): the expected digest of each
cluster is cached in memory (``svc.agents.pool_sync``, ``pool_state.PoolSyncState``); a beat
only compares two strings, and a missing digest is loaded by a background task.

Reports (``PoolReport``) come with the sync's answer and with heartbeats when they changed;
``record_reports`` keeps one ``storage_pool_hosts`` row per (pool, host) and recomputes the
pool's ``total_gb``/``used_gb``: the sums over the hosts that report it ``ok`` for a ``local``
pool (each host has its own directory), the figures of the most recent ``ok`` report for a
shared one (nfs, iscsi, rbd: every host sees the same store). ``allocated_gb`` is the volume
service's. These writes keep the pool's ``updated_at`` (and so its ETag): capacity is status.

Credentials are opened only to build the ``PoolRef`` sent to the agent and the digest; neither is
logged, and errors are logged by code and message only (never their context).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import PoolRef, PoolReport, PoolsSync, pools_digest
from corral.api.errors import CorralError
from corral.api.hosts import HostStatus
from corral.api.storage import PoolHostReport, PoolState, PoolType
from corral.server.agents import host_tokens
from corral.server.agents.client import AgentEndpoint
from corral.server.db.tables import (
    HostRow,
    StoragePoolClusterRow,
    StoragePoolHostRow,
    StoragePoolRow,
)
from corral.server.db.types import utcnow
from corral.server.services.context import Services
from corral.server.services.listing import get_row
from corral.server.workflows.volume_common import pool_ref

log = logging.getLogger(__name__)

SHARED_TYPES = frozenset({PoolType.nfs, PoolType.iscsi, PoolType.rbd})
MAX_ERROR = 2000


# -- what a host should hold --------------------------------------------------------------


def _cluster_pools(cluster_id: Any) -> Any:
    return (
        select(StoragePoolRow)
        .join(StoragePoolClusterRow, StoragePoolClusterRow.pool_id == StoragePoolRow.id)
        .where(
            StoragePoolClusterRow.cluster_id == cluster_id,
            StoragePoolRow.state != PoolState.disabled.value,
        )
        .order_by(StoragePoolRow.id)
    )


async def expected_pools(s: AsyncSession, host_id: str) -> list[StoragePoolRow]:
    """The pools the host should use: attached to its cluster, not ``disabled`` (by id)."""
    cluster_id = select(HostRow.cluster_id).where(HostRow.id == host_id).scalar_subquery()
    return list(await s.scalars(_cluster_pools(cluster_id)))


async def cluster_pools(s: AsyncSession, cluster_id: str) -> list[StoragePoolRow]:
    """``expected_pools`` of every host of ``cluster_id``."""
    return list(await s.scalars(_cluster_pools(cluster_id)))


def digest_of(pools: Iterable[PoolRef]) -> str:
    """The digest an agent holding exactly ``pools`` reports (``corral.api.agent.pools_digest``)."""
    return pools_digest(pools)


async def expected_digest(svc: Services, cluster_id: str) -> str:
    """The digest of the cluster's pool set: cached, else computed once (a query, credentials
    opened) and cached (``PoolSyncState.load``)."""

    async def compute() -> str:
        async with svc.sessionmaker() as s:
            pools = await cluster_pools(s, cluster_id)
        return digest_of(pool_ref(svc.secrets, p) for p in pools)

    return await svc.agents.pool_sync.load(cluster_id, compute)


# -- triggers -----------------------------------------------------------------------------


def check_heartbeat(svc: Services, host: HostRow, reported: str | None) -> None:
    """Called for every heartbeat: when the agent's digest (``reported``; None: an agent that
    does not say) differs from the expected one, or that is not cached, check and sync in the
    background (at most one per host, see ``PoolSyncState.start``). No I/O here."""
    if reported is None:
        return
    state = svc.agents.pool_sync
    if state.expected(host.cluster_id) == reported or state.in_flight(host.id):
        return
    host_id, cluster_id = host.id, host.cluster_id

    async def check() -> bool:
        if await expected_digest(svc, cluster_id) == reported:
            return True
        return await sync_host(svc, host_id)

    state.start(host_id, check)


def pools_changed(svc: Services, *, pool_ids: Iterable[str], cluster_ids: Iterable[str]) -> None:
    """After a committed pool change: forget the expected digests, then in the background drop
    the reports of hosts that no longer use the pools (and recompute their capacity) and sync
    every connected host of ``cluster_ids``."""
    state = svc.agents.pool_sync
    state.invalidate()
    pools, clusters = sorted(set(pool_ids)), sorted(set(cluster_ids))
    state.spawn(_after_change(svc, pools, clusters), name="pool-change")


async def _after_change(svc: Services, pool_ids: list[str], cluster_ids: list[str]) -> None:
    try:
        await prune_reports(svc, pool_ids)
    except Exception:
        log.exception("cannot drop the reports of storage pools no longer used")
    if not cluster_ids:
        return
    async with svc.sessionmaker() as s:
        hosts = list(
            await s.scalars(
                select(HostRow.id).where(
                    HostRow.cluster_id.in_(cluster_ids),
                    HostRow.status == HostStatus.connected.value,
                )
            )
        )
    state = svc.agents.pool_sync
    for host_id in hosts:
        state.start(host_id, _sync_factory(svc, host_id), force=True)


def _sync_factory(svc: Services, host_id: str) -> Any:
    async def run() -> bool:
        return await sync_host(svc, host_id)

    return run


# -- the sync -----------------------------------------------------------------------------


async def agent_endpoint(svc: Services, host: HostRow) -> AgentEndpoint:
    """How to reach the host's agent (its token opened; cached in the directory)."""
    directory = svc.agents.directory
    cached = directory.endpoint(host.id)
    if isinstance(cached, AgentEndpoint):
        return cached
    ep = host_tokens.endpoint(svc.secrets, host, cert_pem=host.cert_pem)
    directory.remember_endpoint(host.id, ep)
    return ep


async def sync_host(svc: Services, host_id: str) -> bool:
    """Send the host its pool set (``pools.sync``, task id ``pools-sync:<host>:<nonce>``) and
    record the reports of the answer. True if the agent now holds the expected set."""
    state = svc.agents.pool_sync
    version = state.version
    async with svc.sessionmaker() as s:
        host = await s.get(HostRow, host_id)
        if host is None:
            return True
        pools = await cluster_pools(s, host.cluster_id)
        cluster_id = host.cluster_id
    try:
        ep = await agent_endpoint(svc, host)
        refs = [pool_ref(svc.secrets, p) for p in pools]
    except CorralError as exc:
        log.warning("host %s: cannot sync storage pools: %s", host_id, exc)
        return False
    digest = digest_of(refs)
    state.remember(cluster_id, digest, version)
    task_id = f"pools-sync:{host_id}:{secrets.token_hex(8)}"
    try:
        result = await svc.agents.run(ep, task_id, PoolsSync(pools=refs))
    except CorralError as exc:
        level = logging.INFO if exc.expected else logging.WARNING
        log.log(level, "host %s: storage pool sync failed: %s", host_id, exc)
        return False
    try:
        reports = [PoolReport.model_validate(r) for r in result.get("pools") or []]
    except ValueError:
        log.warning("host %s: unexpected answer to a storage pool sync", host_id)
        return False
    await record_reports(svc, host_id, reports)
    if result.get("digest") != digest:
        log.warning(
            "host %s: after a storage pool sync its agent holds another pool set (%d pools sent)",
            host_id,
            len(refs),
        )
        return False
    log.info("host %s: %d storage pool(s) synced", host_id, len(refs))
    return True


# -- reports ------------------------------------------------------------------------------


async def record_reports(svc: Services, host_id: str, reports: Sequence[PoolReport]) -> None:
    """Keep ``reports`` as the host's rows (reports of pools it should not use are ignored;
    rows of pools it did not report are deleted) and recompute the capacity of the pools
    concerned. Serialized per host in this process; a concurrent writer on another server node
    makes it try once more."""
    async with svc.agents.pool_sync.lock(host_id):
        for attempt in range(2):
            try:
                await _record(svc, host_id, reports)
                return
            except IntegrityError:
                if attempt:
                    log.warning("host %s: storage pool reports not recorded (conflict)", host_id)


async def _record(svc: Services, host_id: str, reports: Sequence[PoolReport]) -> None:
    async with svc.sessionmaker.begin() as s:
        host = await s.get(HostRow, host_id)
        if host is None:
            return
        allowed = {p.id for p in await cluster_pools(s, host.cluster_id)}
        keep = {r.pool_id: r for r in reports if r.pool_id in allowed}
        existing = {
            r.pool_id: r
            for r in await s.scalars(
                select(StoragePoolHostRow).where(StoragePoolHostRow.host_id == host_id)
            )
        }
        affected = sorted(set(keep) | set(existing))
        if not affected:
            return
        await _lock_pools(s, affected)
        now = utcnow()
        for pool_id, report in keep.items():
            row = existing.get(pool_id)
            if row is None:
                row = StoragePoolHostRow(pool_id=pool_id, host_id=host_id)
                s.add(row)
            row.ok = report.ok
            row.total_gb = report.total_gb if report.ok else 0.0
            row.free_gb = report.free_gb if report.ok else 0.0
            row.error = None if report.ok else (report.error or "failed")[:MAX_ERROR]
            row.updated_at = now
        for pool_id, row in existing.items():
            if pool_id not in keep:
                await s.delete(row)
        for pool_id, report in keep.items():
            if report.ok and report.luns is not None:  # iscsi: the target's LUNs, latest wins
                await s.execute(
                    update(StoragePoolRow)
                    .where(StoragePoolRow.id == pool_id)
                    .values(luns=[list(lun) for lun in report.luns])
                )
        await s.flush()
        await recompute_capacity(s, affected)


async def _lock_pools(s: AsyncSession, pool_ids: Sequence[str]) -> None:
    """Lock the pools' rows (in id order) until the transaction ends, so that two hosts'
    reports recompute a pool one after the other (no-op on SQLite, whose writers are serial)."""
    await s.execute(
        select(StoragePoolRow.id)
        .where(StoragePoolRow.id.in_(pool_ids))
        .order_by(StoragePoolRow.id)
        .with_for_update()
    )


async def recompute_capacity(s: AsyncSession, pool_ids: Sequence[str]) -> None:
    """Set ``total_gb``/``used_gb`` of the pools from their ``ok`` host rows (0 with none);
    ``updated_at`` is kept."""
    if not pool_ids:
        return
    types = dict(
        (
            await s.execute(
                select(StoragePoolRow.id, StoragePoolRow.type).where(
                    StoragePoolRow.id.in_(pool_ids)
                )
            )
        ).all()
    )
    rows = (
        await s.execute(
            select(
                StoragePoolHostRow.pool_id,
                StoragePoolHostRow.total_gb,
                StoragePoolHostRow.free_gb,
                StoragePoolHostRow.updated_at,
            ).where(StoragePoolHostRow.pool_id.in_(pool_ids), StoragePoolHostRow.ok.is_(True))
        )
    ).all()
    figures: dict[str, list[tuple[float, float, Any]]] = {pid: [] for pid in types}
    for pool_id, total, free, at in rows:
        figures[pool_id].append((total, free, at))
    for pool_id, pool_type in types.items():
        seen = figures[pool_id]
        if not seen:
            total = used = 0.0
        elif pool_type in SHARED_TYPES:
            t, f, _ = max(seen, key=lambda x: x[2])
            total, used = t, max(0.0, t - f)
        else:
            total = sum(t for t, _, _ in seen)
            used = sum(max(0.0, t - f) for t, f, _ in seen)
        await s.execute(
            update(StoragePoolRow)
            .where(StoragePoolRow.id == pool_id)
            .values(
                total_gb=round(total, 3),
                used_gb=round(used, 3),
                updated_at=StoragePoolRow.updated_at,
            )
        )


async def prune_reports(svc: Services, pool_ids: Sequence[str]) -> None:
    """Delete the rows of hosts that no longer use the pools (cluster detached, pool disabled)
    and recompute the pools' capacity."""
    if not pool_ids:
        return
    uses = exists().where(
        HostRow.id == StoragePoolHostRow.host_id,
        StoragePoolClusterRow.cluster_id == HostRow.cluster_id,
        StoragePoolClusterRow.pool_id == StoragePoolHostRow.pool_id,
        StoragePoolRow.id == StoragePoolHostRow.pool_id,
        StoragePoolRow.state != PoolState.disabled.value,
    )
    async with svc.sessionmaker.begin() as s:
        present = list(
            await s.scalars(select(StoragePoolRow.id).where(StoragePoolRow.id.in_(pool_ids)))
        )
        if not present:
            return
        await _lock_pools(s, present)
        await s.execute(
            delete(StoragePoolHostRow)
            .where(and_(StoragePoolHostRow.pool_id.in_(present), ~uses))
            .execution_options(synchronize_session=False)
        )
        await recompute_capacity(s, present)


async def forget_host(svc: Services, host_id: str, pool_ids: Sequence[str]) -> None:
    """After the host was removed (its rows went with it): recompute the pools it reported."""
    svc.agents.pool_sync.forget_host(host_id)
    if pool_ids:
        async with svc.sessionmaker.begin() as s:
            await _lock_pools(s, pool_ids)
            await recompute_capacity(s, pool_ids)


# -- reading ------------------------------------------------------------------------------


async def host_counts(s: AsyncSession, pool_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``(ok, failed)`` host counts of each pool (one grouped query)."""
    out = {pid: (0, 0) for pid in pool_ids}
    if not pool_ids:
        return out
    rows = await s.execute(
        select(StoragePoolHostRow.pool_id, StoragePoolHostRow.ok, func.count())
        .where(StoragePoolHostRow.pool_id.in_(pool_ids))
        .group_by(StoragePoolHostRow.pool_id, StoragePoolHostRow.ok)
    )
    for pool_id, ok, n in rows:
        good, bad = out[pool_id]
        out[pool_id] = (good + int(n), bad) if ok else (good, bad + int(n))
    return out


async def pool_hosts(svc: Services, ref: str) -> list[PoolHostReport]:
    """What each host reported of the pool (``GET /storage-pools/{ref}/hosts``), by host name."""
    async with svc.sessionmaker() as s:
        pool = await get_row(s, StoragePoolRow, ref, "storage_pool")
        rows = (
            await s.execute(
                select(StoragePoolHostRow, HostRow.name)
                .join(HostRow, HostRow.id == StoragePoolHostRow.host_id)
                .where(StoragePoolHostRow.pool_id == pool.id)
                .order_by(HostRow.name)
            )
        ).all()
    return [
        PoolHostReport(
            host_id=r.host_id,
            host_name=name,
            ok=r.ok,
            total_gb=r.total_gb,
            free_gb=r.free_gb,
            error=r.error,
            updated_at=r.updated_at,
        )
        for r, name in rows
    ]
