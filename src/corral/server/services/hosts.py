"""Hosts: add (attach the agent), enable/disable, remove; heartbeats, events and liveness."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import Heartbeat, VmEvent
from corral.api.errors import CorralError, InUse, InvalidInput, NotFound
from corral.api.hosts import Host, HostCapacity, HostCreate, HostFacts, HostStatus, HostUpdate
from corral.api.operations import Operation
from corral.api.vms import PowerState, VmStatus
from corral.server.agents import host_tokens
from corral.server.agents.client import AgentEndpoint
from corral.server.db.tables import ClusterRow, HostRow, ImageRow, StoragePoolHostRow, VmRow
from corral.server.db.types import UTCDateTime, new_id, utcnow
from corral.server.query import specs
from corral.server.services import net_sync
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.placement import invalidate_views
from corral.server.services.pool_sync import check_heartbeat, forget_host, record_reports
from corral.server.workflows.vm_power import STATUS_OF_POWER

log = logging.getLogger(__name__)


def host_model(r: HostRow) -> Host:
    return Host(
        id=r.id,
        name=r.name,
        cluster_id=r.cluster_id,
        url=r.url,
        status=HostStatus(r.status),
        enabled=r.enabled,
        facts=HostFacts.model_validate(r.facts) if r.facts else None,
        capacity=HostCapacity(
            cpus_total=r.cpus_capacity,
            cpus_used=r.cpus_used,
            memory_mb_total=r.memory_mb_capacity,
            memory_mb_used=r.memory_mb_used,
            disk_gb_total=r.disk_gb_capacity,
            disk_gb_used=r.disk_gb_used,
        ),
        last_heartbeat_at=r.last_heartbeat_at,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


class _HostKind(Kind[HostRow, Host]):
    async def models(self, s: AsyncSession, rows: list[HostRow]) -> list[Host]:
        """Hosts with how many VMs each has (one grouped query for the page)."""
        ids = [r.id for r in rows]
        counts = dict(
            (
                await s.execute(
                    select(VmRow.host_id, func.count())
                    .where(VmRow.host_id.in_(ids))
                    .group_by(VmRow.host_id)
                )
            ).all()
        )
        return [host_model(r).model_copy(update={"vm_count": counts.get(r.id, 0)}) for r in rows]


HOSTS = _HostKind("host", HostRow, host_model, specs.HOSTS, Host)
_HOSTS: Table = HostRow.__table__  # type: ignore[assignment]


def recompute_capacity(host: HostRow, cluster: ClusterRow) -> None:
    """Capacity = facts x the cluster's overcommit ratios (claims are unchanged)."""
    if not host.facts:
        return
    facts = HostFacts.model_validate(host.facts)
    host.cpus_capacity = int(facts.cpu_threads * cluster.cpu_overcommit)
    host.memory_mb_capacity = int(facts.memory_mb * cluster.memory_overcommit)
    host.disk_gb_capacity = float(facts.disk_gb_total)


async def add_host(*, svc: Services, spec: HostCreate) -> Operation:
    """Record the host (status connecting) and attach its agent in a ``host.add`` workflow."""
    if not spec.url.startswith(("http://", "https://")):
        raise InvalidInput("the agent URL must start with https:// (or http://)", url=spec.url)
    async with svc.sessionmaker() as s:
        cluster = await get_row(s, ClusterRow, spec.cluster, "cluster")
        name = spec.name or _name_from_url(spec.url)
        await ensure_name_free(s, HostRow, name, "host")
        dup = await s.scalar(select(HostRow.name).where(HostRow.url == spec.url.rstrip("/")))
        if dup is not None:
            raise InvalidInput(f"host {dup!r} already has the agent {spec.url}", url=spec.url)
        host_id = new_id()
        token = host_tokens.issue(svc.secrets, host_id)  # the agent gets it at enrollment
        row = HostRow(
            id=host_id,
            name=name,
            cluster_id=cluster.id,
            url=spec.url.rstrip("/"),
            token_sealed=token.sealed,
            token_digest=token.digest,
            status=HostStatus.connecting,
        )
        s.add(row)
        await s.flush()
        op = svc.runner.create(
            s,
            type="host.add",
            target_type="host",
            target_id=row.id,
            lock_key=f"host:{row.id}",
            params={
                "host_id": row.id,
                "named": spec.name is not None,
                "cert_fingerprint": spec.cert_fingerprint,
            },
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


def _name_from_url(url: str) -> str:
    import re
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    base = f"{parts.hostname or 'host'}-{parts.port or 443}{parts.path}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.")[:63] or "host"


async def update_host(*, svc: Services, ref: str, spec: HostUpdate) -> Operation:
    async with svc.sessionmaker() as s:
        row = await get_row(s, HostRow, ref, "host")
        if spec.enabled is not None:
            row.enabled = spec.enabled
        op = svc.runner.create(
            s, type="host.update", target_type="host", target_id=row.id, done=True
        )
        await s.commit()
    invalidate_views()
    return op_model(op)


async def remove_host(*, svc: Services, ref: str) -> Operation:
    """Remove a host without VMs and revoke its agent's credentials: its token (and so its
    heartbeats, events and callbacks: 401) and its certificate (the server verifies an agent
    against the certificate issued for the host's row, now gone). Then, best effort, tell the
    agent to forget this server (``POST /v1/detach``) so that it can be added again."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, HostRow, ref, "host")
        n = await s.scalar(select(func.count()).where(VmRow.host_id == row.id))
        if n:
            raise InUse(f"host {row.name!r} still has {n} VM(s)", vms=n)
        layers = list(
            await s.scalars(
                select(ImageRow.name).where(ImageRow.host_id == row.id).order_by(ImageRow.name)
            )
        )
        if layers:
            raise InUse(
                f"host {row.name!r} holds image(s) kept on it only (linked-clone layers or"
                f" clone bases not published yet): {', '.join(layers)}; delete them first",
                images=layers,
            )
        pool_ids = list(
            await s.scalars(
                select(StoragePoolHostRow.pool_id).where(StoragePoolHostRow.host_id == row.id)
            )
        )
        try:
            ep: AgentEndpoint | None = host_tokens.endpoint(svc.secrets, row, cert_pem=row.cert_pem)
        except CorralError:  # sealed with a master key since lost: remove it all the same
            log.warning("host %s: its token does not open; removing without detaching", row.id)
            ep = None
        await s.delete(row)
        op = svc.runner.create(
            s, type="host.remove", target_type="host", target_id=row.id, done=True
        )
        await s.commit()
    svc.agents.directory.forget_host(row.id, row.token_digest)
    await forget_host(svc, row.id, pool_ids)  # its pool reports went with it
    svc.agents.net_sync.forget_host(row.id)  # its network slots and DHCP addresses went too
    invalidate_views()
    if ep is not None:
        await svc.agents.detach(ep)
    return op_model(op)


async def host_by_token(*, svc: Services, token: str) -> HostRow:
    """The host (a detached row) whose agent holds ``token``, found by the token's digest (the
    database has no plain token); cached by digest (``HostDirectory``)."""
    directory = svc.agents.directory
    digest = host_tokens.token_digest(token)
    row: HostRow | None = directory.host_for(digest)
    if row is not None:
        return row
    async with svc.sessionmaker() as s:
        row = await s.scalar(select(HostRow).where(HostRow.token_digest == digest))
    if row is None:
        raise NotFound("no host has this token")
    directory.remember(digest, row)
    return row


# -- reports from agents ------------------------------------------------------------------------

_STEADY = {VmStatus.running, VmStatus.stopped, VmStatus.paused, VmStatus.error, VmStatus.unknown}


REPORT_RECHECK_S = 15.0
"""A heartbeat repeating the VM states of the last compared one is compared again after this long."""

HEARTBEAT_AGE_S = 1.0
"""A heartbeat's VM states are a snapshot taken up to this long before it arrives."""


async def apply_power_state(
    svc: Services, host_id: str, vm_id: str, power: PowerState, observed_at: datetime
) -> None:
    """Record what the hypervisor said about a VM at ``observed_at``. A VM in a steady status
    follows it (a guest that shut itself down becomes ``stopped``); a VM under an operation keeps
    its status. A report older than the VM's last change is stale (an operation finished after it
    was observed) and is ignored. Agent and server clocks are assumed in sync (NTP)."""
    await _apply_power_states(svc, host_id, [(vm_id, power, observed_at)])


_VMS: Table = VmRow.__table__  # type: ignore[assignment]
_STEADY_SQL: list[ColumnElement[Any]] = [literal_column(f"'{s.value}'") for s in sorted(_STEADY)]
"""The steady statuses as SQL literals (an expanding IN cannot be used with ``executemany``)."""


def _power_update(with_status: bool) -> Any:
    """One conditional UPDATE that applies a report (``executemany``-able): only a VM of the
    reporting host, whose power state differs, and that did not change after the observation;
    with ``with_status``, a VM in a steady status also takes the status of the power state."""
    c = _VMS.c
    values: dict[str, Any] = {"power_state": bindparam("p"), "updated_at": bindparam("now")}
    if with_status:
        values["status"] = case(
            (c.status.in_(_STEADY_SQL), bindparam("st", type_=String())),
            else_=c.status,
        )
    return (
        update(_VMS)
        .where(
            c.id == bindparam("vm"),
            c.host_id == bindparam("host"),
            c.power_state != bindparam("p"),
            or_(c.updated_at.is_(None), c.updated_at <= bindparam("at", type_=UTCDateTime())),
        )
        .values(values)
    )


_HOST_VMS = select(_VMS.c.id, _VMS.c.power_state).where(_VMS.c.host_id == bindparam("b_host"))
_SET_POWER = _power_update(False)
_SET_POWER_AND_STATUS = _power_update(True)


async def _apply_power_states(
    svc: Services, host_id: str, reports: list[tuple[str, PowerState, datetime]]
) -> None:
    """Apply ``(vm_id, power, observed_at)`` reports in order, in one transaction, without reading
    the VMs first: each is one conditional UPDATE (see ``_power_update``; same rules as
    ``apply_power_state``), grouped into runs of one statement shape for ``executemany``."""
    if not reports:
        return
    now = utcnow()
    runs: list[tuple[Any, list[dict[str, Any]]]] = []
    for vm_id, power, at in reports:
        params: dict[str, Any] = {"vm": vm_id, "host": host_id, "p": power.value, "at": at}
        params["now"] = now
        status = STATUS_OF_POWER.get(power)
        stmt = _SET_POWER if status is None else _SET_POWER_AND_STATUS
        if status is not None:
            params["st"] = status.value
        if runs and runs[-1][0] is stmt:
            runs[-1][1].append(params)
        else:
            runs.append((stmt, [params]))
    async with svc.db.begin() as conn:
        for stmt, params_list in runs:
            await conn.execute(stmt, params_list)


async def record_events(*, svc: Services, host: HostRow, events: list[VmEvent]) -> None:
    """Apply a batch of lifecycle events (in order, one transaction)."""
    await _apply_power_states(svc, host.id, [(e.vm_id, e.power_state, e.at) for e in events])


async def record_heartbeat(*, svc: Services, host: HostRow, beat: Heartbeat) -> None:
    """Note the heartbeat and apply the VM power states that differ from the database.

    A heartbeat of a host this process knows as connected (``HostDirectory.live``) and without
    new facts writes nothing: its time is written by ``mark_silent_hosts`` with the others'. Any
    other heartbeat (first one, new facts, host was marked disconnected) is written at once.

    Storage pools (``pool_sync``): reports it carries are recorded; a pool digest that differs
    from the one expected for the host's cluster starts a background sync (no I/O here); so
    does a network digest that differs from the host's (``net_sync``)."""
    check_heartbeat(svc, host, beat.pools_digest)
    net_sync.check_heartbeat(svc, host, beat.network_digest)
    if beat.pools is not None:
        await record_reports(svc, host.id, beat.pools)
    directory = svc.agents.directory
    facts = beat.facts
    if (
        facts is not None
        and host.id in directory.live
        and directory.capacity_facts.get(host.id) == _prompt_facts(facts)
    ):
        # same capacity: the new facts (free disk space...) are written with the beats
        directory.pending_facts[host.id] = facts.model_dump(mode="json")
        facts = None
    if facts is None and host.id in directory.live:
        directory.beats[host.id] = utcnow()
    else:
        await _write_heartbeat(svc, host.id, beat)
        directory.live.add(host.id)
        directory.beats.pop(host.id, None)
    if not beat.vms:
        return
    digest = hash(tuple((r.vm_id, r.power_state) for r in beat.vms))
    if not directory.report_is_new(host.id, digest, REPORT_RECHECK_S):
        return
    observed_at = utcnow() - timedelta(seconds=HEARTBEAT_AGE_S)
    async with svc.db.connect() as conn:
        rows = await conn.execute(_HOST_VMS, {"b_host": host.id})
        known = {vm_id: power for vm_id, power in rows}
    changed = [
        (r.vm_id, r.power_state, observed_at)
        for r in beat.vms
        if r.vm_id in known and known[r.vm_id] != r.power_state
    ]
    await _apply_power_states(svc, host.id, changed)
    directory.report_compared(host.id, digest)


async def _write_heartbeat(svc: Services, host_id: str, beat: Heartbeat) -> None:
    async with svc.sessionmaker.begin() as s:
        row = await s.get(HostRow, host_id)
        if row is None:
            return
        before = _schedulable(row)
        tunnel_before = (row.facts or {}).get("tunnel_ip")
        if beat.facts is not None:
            row.facts = beat.facts.model_dump(mode="json")
            cluster = await s.get(ClusterRow, row.cluster_id)
            if cluster is not None:
                recompute_capacity(row, cluster)
        row.last_heartbeat_at = utcnow()
        row.status = HostStatus.connected
        changed = _schedulable(row) != before
    if beat.facts is not None:
        svc.agents.directory.capacity_facts[host_id] = _prompt_facts(beat.facts)
        if beat.facts.tunnel_ip != tunnel_before:
            net_sync.tunnel_moved(svc, host_id)
    if changed:
        invalidate_views()  # new capacity, or a host that (re)connected


def _prompt_facts(facts: HostFacts) -> tuple[object, ...]:
    """The facts written at once when they change: those a host's capacity is computed from,
    and its tunnel endpoint (the other hosts' VXLAN tunnels point at it)."""
    return (facts.cpu_threads, facts.memory_mb, facts.disk_gb_total, facts.tunnel_ip)


def _schedulable(row: HostRow) -> tuple[object, ...]:
    """What placement's cached host views hold of a host (free disk space, e.g., is not)."""
    facts = row.facts or {}
    return (
        row.status,
        row.cpus_capacity,
        row.memory_mb_capacity,
        row.disk_gb_capacity,
        facts.get("cpu_threads"),
        facts.get("memory_mb"),
        facts.get("disk_gb_total"),
    )


async def mark_silent_hosts(*, svc: Services) -> int:
    """Write the heartbeats noted since the last call, then mark ``disconnected`` the hosts whose
    last heartbeat is older than ``heartbeat_timeout_s``. Returns how many were marked."""
    directory = svc.agents.directory
    beats = directory.take_beats()
    facts, directory.pending_facts = directory.pending_facts, {}
    cutoff = utcnow() - timedelta(seconds=svc.settings.heartbeat_timeout_s)
    async with svc.sessionmaker.begin() as s:
        if facts:
            await s.execute(
                update(_HOSTS)
                .where(_HOSTS.c.id == bindparam("host_id"))
                .values(facts=bindparam("facts")),
                [{"host_id": h, "facts": f} for h, f in facts.items()],
            )
        if beats:
            await s.execute(
                update(_HOSTS)
                .where(_HOSTS.c.id == bindparam("host_id"))
                .values(last_heartbeat_at=bindparam("at"), status=HostStatus.connected),
                [{"host_id": h, "at": at} for h, at in beats.items()],
            )
        silent = list(
            await s.scalars(
                select(HostRow.id).where(
                    HostRow.status == HostStatus.connected, HostRow.last_heartbeat_at < cutoff
                )
            )
        )
        if silent:
            await s.execute(
                update(HostRow)
                .where(HostRow.id.in_(silent), HostRow.status == HostStatus.connected)
                .values(status=HostStatus.disconnected)
            )
    if silent:
        directory.live.difference_update(silent)  # their next heartbeat writes "connected"
        invalidate_views()
    return len(silent)
