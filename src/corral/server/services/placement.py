"""Placement and capacity claims: the scheduler decides, conditional UPDATEs make it stick.

A claim adds a VM's cpus/memory/disk to its host's ``*_used`` only if they stay within
``*_capacity``, in the same statement; parallel requests therefore cannot oversubscribe a host, on
SQLite or PostgreSQL, with one server or several. ``vms.claimed`` makes claim and release idempotent.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import NoHostAvailable
from corral.api.hosts import HostFacts, HostStatus
from corral.server.db.tables import ClusterRow, HostRow, VmRow
from corral.server.scheduler.model import HostView, PlacementRequest
from corral.server.scheduler.placement import place, rank


async def host_views(s: AsyncSession) -> list[HostView]:
    rows = await s.execute(
        select(HostRow, ClusterRow.cpu_overcommit, ClusterRow.memory_overcommit).join(
            ClusterRow, ClusterRow.id == HostRow.cluster_id
        )
    )
    views = []
    for host, cpu_oc, mem_oc in rows:
        facts = HostFacts.model_validate(host.facts) if host.facts else None
        views.append(
            HostView(
                id=host.id,
                name=host.name,
                connected=host.status == HostStatus.connected,
                enabled=host.enabled,
                cpu_threads=facts.cpu_threads if facts else 0,
                memory_mb=facts.memory_mb if facts else 0,
                disk_gb=facts.disk_gb_total if facts else 0.0,
                cpus_used=host.cpus_used,
                memory_mb_used=host.memory_mb_used,
                disk_gb_used=host.disk_gb_used,
                cpu_overcommit=cpu_oc,
                memory_overcommit=mem_oc,
                vm_count=0,
            )
        )
    return views


async def claim_on(s: AsyncSession, vm: VmRow, host_id: str) -> bool:
    """Claim the VM's resources on ``host_id`` if they fit; False if they do not (nothing changed)."""
    res = await s.execute(
        update(HostRow)
        .where(
            HostRow.id == host_id,
            HostRow.cpus_used + vm.cpus <= HostRow.cpus_capacity,
            HostRow.memory_mb_used + vm.memory_mb <= HostRow.memory_mb_capacity,
            HostRow.disk_gb_used + vm.disk_gb <= HostRow.disk_gb_capacity,
        )
        .values(
            cpus_used=HostRow.cpus_used + vm.cpus,
            memory_mb_used=HostRow.memory_mb_used + vm.memory_mb,
            disk_gb_used=HostRow.disk_gb_used + vm.disk_gb,
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(res, "rowcount", 0):
        return False
    vm.host_id = host_id
    vm.claimed = True
    await s.flush()
    return True


async def place_and_claim(s: AsyncSession, vm: VmRow, pinned_host_id: str | None) -> str:
    """Choose a host for ``vm`` and claim its resources there; ``NoHostAvailable`` says why each
    host was refused."""
    req = PlacementRequest(
        cpus=vm.cpus, memory_mb=vm.memory_mb, disk_gb=vm.disk_gb, host_id=pinned_host_id
    )
    views = await host_views(s)
    for host in rank(req, views) or [place(req, views)]:  # place() raises, explaining each host
        if await claim_on(s, vm, host.id):
            return host.id
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
            disk_gb_used=HostRow.disk_gb_used - vm.disk_gb,
        )
        .execution_options(synchronize_session=False)
    )
    vm.claimed = False


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
    return True
