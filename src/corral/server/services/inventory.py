"""Zones, clusters and instance offerings: pure database resources."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InUse, NameTaken
from corral.api.offerings import Offering, OfferingCreate
from corral.api.operations import Operation
from corral.api.zones import Cluster, ClusterCreate, ClusterUpdate, Zone, ZoneCreate
from corral.server.db.tables import ClusterRow, HostRow, OfferingRow, VmRow, ZoneRow
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model


def zone_model(r: ZoneRow) -> Zone:
    return Zone(
        id=r.id,
        name=r.name,
        description=r.description,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def cluster_model(r: ClusterRow) -> Cluster:
    return Cluster(
        id=r.id,
        name=r.name,
        zone_id=r.zone_id,
        description=r.description,
        cpu_overcommit=r.cpu_overcommit,
        memory_overcommit=r.memory_overcommit,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def offering_model(r: OfferingRow) -> Offering:
    return Offering(
        id=r.id,
        name=r.name,
        cpus=r.cpus,
        memory_mb=r.memory_mb,
        disk_gb=r.disk_gb,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


async def ensure_name_free(
    s: AsyncSession, table: Any, name: str, kind: str, *, project_id: Any = ...
) -> None:
    """``NameTaken`` if a row named ``name`` exists (in ``project_id``, for project kinds)."""
    stmt = select(table.id).where(table.name == name)
    if project_id is not ...:
        col = table.project_id
        stmt = stmt.where(col.is_(None) if project_id is None else col == project_id)
    if await s.scalar(stmt.limit(1)) is not None:
        raise NameTaken(f"a {kind} named {name!r} exists already", kind=kind, name=name)


async def finish(
    svc: Services, s: AsyncSession, *, type: str, kind: str, target_id: str
) -> Operation:
    op = svc.runner.create(s, type=type, target_type=kind, target_id=target_id, done=True)
    try:
        await s.commit()
    except IntegrityError as exc:
        raise NameTaken(f"the {kind} name is taken", kind=kind) from exc
    return op_model(op)


async def create_zone(*, svc: Services, spec: ZoneCreate) -> Operation:
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, ZoneRow, spec.name, "zone")
        row = ZoneRow(name=spec.name, description=spec.description)
        s.add(row)
        await s.flush()
        return await finish(svc, s, type="zone.create", kind="zone", target_id=row.id)


async def create_cluster(*, svc: Services, spec: ClusterCreate) -> Operation:
    async with svc.sessionmaker() as s:
        zone = await get_row(s, ZoneRow, spec.zone, "zone")
        await ensure_name_free(s, ClusterRow, spec.name, "cluster")
        row = ClusterRow(
            name=spec.name,
            zone_id=zone.id,
            description=spec.description,
            cpu_overcommit=spec.cpu_overcommit,
            memory_overcommit=spec.memory_overcommit,
        )
        s.add(row)
        await s.flush()
        return await finish(svc, s, type="cluster.create", kind="cluster", target_id=row.id)


async def update_cluster(*, svc: Services, ref: str, spec: ClusterUpdate) -> Operation:
    from corral.server.services.hosts import recompute_capacity

    async with svc.sessionmaker() as s:
        row = await get_row(s, ClusterRow, ref, "cluster")
        for field, value in spec.model_dump(exclude_none=True).items():
            setattr(row, field, value)
        for host in await s.scalars(select(HostRow).where(HostRow.cluster_id == row.id)):
            recompute_capacity(host, row)
        return await finish(svc, s, type="cluster.update", kind="cluster", target_id=row.id)


async def create_offering(*, svc: Services, spec: OfferingCreate) -> Operation:
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, OfferingRow, spec.name, "offering")
        row = OfferingRow(**spec.model_dump())
        s.add(row)
        await s.flush()
        return await finish(svc, s, type="offering.create", kind="offering", target_id=row.id)


async def count_where(s: AsyncSession, col: Any, value: str) -> int:
    return int(await s.scalar(select(func.count()).where(col == value)) or 0)


async def delete_zone(*, svc: Services, ref: str) -> Operation:
    async with svc.sessionmaker() as s:
        row = await get_row(s, ZoneRow, ref, "zone")
        if n := await count_where(s, ClusterRow.zone_id, row.id):
            raise InUse(f"zone {row.name!r} still has {n} cluster(s)", clusters=n)
        await s.delete(row)
        return await finish(svc, s, type="zone.delete", kind="zone", target_id=row.id)


async def delete_cluster(*, svc: Services, ref: str) -> Operation:
    async with svc.sessionmaker() as s:
        row = await get_row(s, ClusterRow, ref, "cluster")
        if n := await count_where(s, HostRow.cluster_id, row.id):
            raise InUse(f"cluster {row.name!r} still has {n} host(s)", hosts=n)
        await s.delete(row)
        return await finish(svc, s, type="cluster.delete", kind="cluster", target_id=row.id)


async def delete_offering(*, svc: Services, ref: str) -> Operation:
    async with svc.sessionmaker() as s:
        row = await get_row(s, OfferingRow, ref, "offering")
        if n := await count_where(s, VmRow.offering_id, row.id):
            raise InUse(f"offering {row.name!r} is used by {n} VM(s)", vms=n)
        await s.delete(row)
        return await finish(svc, s, type="offering.delete", kind="offering", target_id=row.id)


ZONES = Kind("zone", ZoneRow, zone_model, specs.ZONES, Zone)
CLUSTERS = Kind("cluster", ClusterRow, cluster_model, specs.CLUSTERS, Cluster)
OFFERINGS = Kind("offering", OfferingRow, offering_model, specs.OFFERINGS, Offering)
