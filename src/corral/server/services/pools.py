"""Storage pools as management-plane records: create, update, attach/detach clusters, delete.

Every change is one transaction that ends with a finished operation (``inventory.finish``).
Credentials are sealed with the master key (``svc.secrets``, context ``credentials_context``)
before they reach the database; no answer and no query ever carries them (``has_credentials``
only says whether some are stored). After each change that alters what hosts should hold
(create, state, credentials, attach, detach, delete) the hosts of the affected clusters are
synced in the background (``pool_sync.pools_changed``); capacity is what they report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InUse, InvalidInput, InvalidState
from corral.api.operations import Operation
from corral.api.storage import (
    CREDENTIAL_TYPES,
    PoolCapacity,
    PoolHosts,
    PoolLun,
    PoolState,
    PoolType,
    StoragePool,
    StoragePoolCreate,
    StoragePoolUpdate,
    typed_settings,
)
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import (
    ClusterRow,
    RecycleBinRow,
    StoragePoolClusterRow,
    StoragePoolRow,
    VolumeAttachmentRow,
    VolumeRow,
)
from corral.server.db.types import new_id, utcnow
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free, finish
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.pool_sync import host_counts, pools_changed
from corral.server.services.volumes import claim_status
from corral.server.workflows.pool_delete import POOL_DELETE
from corral.server.workflows.volume_common import credentials_context, pool_host

KIND = "storage_pool"


def to_model(
    r: StoragePoolRow, cluster_ids: Sequence[str] = (), hosts: tuple[int, int] = (0, 0)
) -> StoragePool:
    return StoragePool(
        id=r.id,
        name=r.name,
        type=PoolType(r.type),
        state=PoolState(r.state),
        settings=typed_settings(r.type, r.settings),
        cluster_ids=sorted(cluster_ids),
        has_credentials=r.credentials_sealed is not None,
        overcommit=r.overcommit,
        capacity=PoolCapacity(total_gb=r.total_gb, used_gb=r.used_gb, allocated_gb=r.allocated_gb),
        hosts=PoolHosts(ok=hosts[0], failed=hosts[1]),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


async def clusters_of(s: AsyncSession, pool_ids: Sequence[str]) -> dict[str, list[str]]:
    """The attached cluster ids of each pool of ``pool_ids`` (one query)."""
    out: dict[str, list[str]] = {pid: [] for pid in pool_ids}
    if not pool_ids:
        return out
    rows = await s.execute(
        select(StoragePoolClusterRow.pool_id, StoragePoolClusterRow.cluster_id).where(
            StoragePoolClusterRow.pool_id.in_(pool_ids)
        )
    )
    for pool_id, cluster_id in rows:
        out[pool_id].append(cluster_id)
    return out


class PoolKind(Kind[StoragePoolRow, StoragePool]):
    """Pools with their attached clusters and host counts (two queries per page)."""

    async def models(self, s: AsyncSession, rows: list[StoragePoolRow]) -> list[StoragePool]:
        ids = [r.id for r in rows]
        attached = await clusters_of(s, ids)
        counts = await host_counts(s, ids)
        return [to_model(r, attached[r.id], counts[r.id]) for r in rows]


POOLS = PoolKind(KIND, StoragePoolRow, to_model, specs.STORAGE_POOLS, StoragePool)


async def count_pool_volumes(s: AsyncSession, pool_id: str) -> int:
    """How many volumes the pool holds (``delete_pool`` refuses a pool that holds some)."""
    n = await s.scalar(
        select(func.count()).select_from(VolumeRow).where(VolumeRow.pool_id == pool_id)
    )
    return int(n or 0)


async def _attach(s: AsyncSession, pool_id: str, cluster_ref: str) -> str | None:
    """Attach the cluster (``NotFound`` if none); its id, None if it was attached already."""
    cluster = await get_row(s, ClusterRow, cluster_ref, "cluster")
    key = (pool_id, cluster.id)
    if await s.get(StoragePoolClusterRow, key) is not None:
        return None
    s.add(StoragePoolClusterRow(pool_id=pool_id, cluster_id=cluster.id))
    return str(cluster.id)


async def _attached(s: AsyncSession, pool_id: str) -> list[str]:
    """The ids of the clusters attached to the pool."""
    return list(
        await s.scalars(
            select(StoragePoolClusterRow.cluster_id).where(StoragePoolClusterRow.pool_id == pool_id)
        )
    )


async def create_pool(*, svc: Services, spec: StoragePoolCreate) -> Operation:
    """A new pool (``enabled``) attached to ``spec.clusters``. ``NameTaken`` if the name is used,
    ``NotFound`` if a cluster is unknown: then nothing is created."""
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, StoragePoolRow, spec.name, KIND)
        pool_id = new_id()
        sealed = None
        if spec.credentials is not None:
            sealed = svc.secrets.seal(spec.credentials, credentials_context(pool_id))
        row = StoragePoolRow(
            id=pool_id,
            name=spec.name,
            type=spec.type,
            state="enabled",
            settings=spec.settings.model_dump(mode="json"),
            credentials_sealed=sealed,
            overcommit=spec.overcommit,
        )
        s.add(row)
        await s.flush()
        clusters = [
            cluster_id
            for ref in dict.fromkeys(spec.clusters)
            if (cluster_id := await _attach(s, pool_id, ref)) is not None
        ]
        op = await finish(svc, s, type="storage_pool.create", kind=KIND, target_id=pool_id)
    if clusters:
        pools_changed(svc, pool_ids=[pool_id], cluster_ids=clusters)
    return op


async def update_pool(*, svc: Services, ref: str, spec: StoragePoolUpdate) -> Operation:
    """Change state and overcommit; ``credentials`` replaces the stored ones (sealed anew).
    ``InvalidInput`` (422, from the model) for credentials on a type that takes none."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, StoragePoolRow, ref, KIND)
        synced = spec.credentials is not None or (
            spec.state is not None and spec.state != row.state
        )
        if spec.credentials is not None:
            if row.type not in CREDENTIAL_TYPES:
                raise InvalidInput(f"a {row.type} pool takes no credentials", field="credentials")
            row.credentials_sealed = svc.secrets.seal(spec.credentials, credentials_context(row.id))
        if spec.state is not None:
            row.state = spec.state
        if spec.overcommit is not None:
            row.overcommit = spec.overcommit
        row.updated_at = utcnow()
        clusters = await _attached(s, row.id) if synced else []
        pool_id = row.id
        op = await finish(svc, s, type="storage_pool.update", kind=KIND, target_id=pool_id)
    if synced:
        pools_changed(svc, pool_ids=[pool_id], cluster_ids=clusters)
    return op


async def attach_cluster(*, svc: Services, ref: str, cluster: str) -> Operation:
    """Attach a cluster to the pool: its hosts may use the pool. Attaching an attached cluster
    changes nothing and is not an error; an unknown cluster is ``NotFound``."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, StoragePoolRow, ref, KIND)
        cluster_id = await _attach(s, row.id, cluster)
        if cluster_id is not None:
            row.updated_at = utcnow()
        pool_id = row.id
        op = await finish(svc, s, type="storage_pool.attach", kind=KIND, target_id=pool_id)
    if cluster_id is not None:
        pools_changed(svc, pool_ids=[pool_id], cluster_ids=[cluster_id])
    return op


async def detach_cluster(*, svc: Services, ref: str, cluster: str) -> Operation:
    """Detach a cluster from the pool (a cluster that is not attached: nothing changes); an
    unknown cluster is ``NotFound``."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, StoragePoolRow, ref, KIND)
        found = await get_row(s, ClusterRow, cluster, "cluster")
        link = await s.get(StoragePoolClusterRow, (row.id, found.id))
        if link is not None:
            await s.delete(link)
            row.updated_at = utcnow()
        pool_id, cluster_id = row.id, found.id
        op = await finish(svc, s, type="storage_pool.detach", kind=KIND, target_id=pool_id)
    if link is not None:
        pools_changed(svc, pool_ids=[pool_id], cluster_ids=[cluster_id])
    return op


async def _cascade(
    svc: Services, s: AsyncSession, pool: StoragePoolRow, clusters: Sequence[str]
) -> Any:
    """Claim every volume of the pool for deletion and add the ``storage_pool.delete``
    operation (launch it after the commit)."""
    vols = list(await s.scalars(select(VolumeRow).where(VolumeRow.pool_id == pool.id)))
    vols.sort(key=lambda v: v.parent_snapshot_id is None)  # Ceph clones before their sources
    vids = [v.id for v in vols]
    attached = sorted(
        set(
            await s.scalars(
                select(VolumeRow.name)
                .join(VolumeAttachmentRow, VolumeAttachmentRow.volume_id == VolumeRow.id)
                .where(VolumeRow.id.in_(vids))
            )
        )
    )
    if attached:
        raise InUse(
            f"storage pool {pool.name!r} has attached volumes: detach them first",
            volumes=attached,
        )
    deletable = ("available", "error", "recycled")  # the bin's volumes go too, for good
    busy = sorted(v.name for v in vols if v.status not in deletable)
    if busy:
        raise InvalidState(f"volumes of pool {pool.name!r} are busy: retry", volumes=busy)
    await s.execute(
        delete(RecycleBinRow).where(
            RecycleBinRow.kind == "volume", RecycleBinRow.resource_id.in_(vids)
        )
    )
    pairs = []
    for v in vols:
        await claim_status(
            s,
            v,
            {VolumeStatus.available, VolumeStatus.error, VolumeStatus.recycled},
            VolumeStatus.deleting,
            "delete",
        )
        host = await pool_host(s, pool.id, v) if v.instantiated else None
        pairs.append([v.id, host])
    return svc.runner.create(
        s,
        type=POOL_DELETE.type,
        target_type=KIND,
        target_id=pool.id,
        lock_key=f"storage_pool:{pool.id}",
        params={"pool_id": pool.id, "volumes": pairs, "cluster_ids": list(clusters)},
    )


async def delete_pool(*, svc: Services, ref: str, cascade: bool = False) -> Operation:
    """Remove the pool record (its cluster attachments go with it).

    Refused with ``InUse`` (409 ``in_use``) while it holds volumes (``count_pool_volumes``),
    unless ``cascade``: then its volumes are deleted first (``storage_pool.delete``), which is
    refused while any of them is attached (``InUse`` listing them) or busy (``InvalidState``).
    Refused with ``InvalidState`` (409 ``invalid_state``) while it is ``enabled`` or
    ``disabled`` with clusters attached: an attached pool is deleted only in ``maintenance`` (put
    it there, or detach its clusters, first), so a pool hosts may be using never vanishes by one
    call.
    """
    async with svc.sessionmaker() as s:
        row = await get_row(s, StoragePoolRow, ref, KIND)
        n = await count_pool_volumes(s, row.id)
        if n and not cascade:
            raise InUse(
                f"storage pool {row.name!r} still holds {n} volume(s) (those in the recycle bin"
                " count: expunge them): delete them, or the pool with cascade=true",
                volumes=n,
            )
        attached = int(
            await s.scalar(select(func.count()).where(StoragePoolClusterRow.pool_id == row.id)) or 0
        )
        if attached and row.state != "maintenance":
            raise InvalidState(
                f"storage pool {row.name!r} is attached to {attached} cluster(s): put it in "
                "maintenance or detach them first",
                state=row.state,
                clusters=attached,
            )
        clusters = await _attached(s, row.id)
        pool_id = row.id
        if n:
            op = await _cascade(svc, s, row, clusters)
            await s.commit()
            svc.runner.launch(op)
            return op_model(op)
        await s.delete(row)
        op = await finish(svc, s, type="storage_pool.delete", kind=KIND, target_id=pool_id)
    if clusters:
        pools_changed(svc, pool_ids=[], cluster_ids=clusters)
    return op


async def pool_luns(svc: Services, ref: str) -> list[PoolLun]:
    """The LUN inventory of an iscsi pool (``InvalidInput`` for another type), by number,
    with the volume using each."""
    async with svc.sessionmaker() as s:
        pool = await get_row(s, StoragePoolRow, ref, KIND)
        if pool.type != "iscsi":
            raise InvalidInput(
                f"storage pool {pool.name!r} is {pool.type}: only iscsi pools have LUNs",
                pool_type=pool.type,
            )
        users = dict(
            (
                await s.execute(
                    select(VolumeRow.pool_name, VolumeRow.id).where(VolumeRow.pool_id == pool.id)
                )
            ).all()
        )
    return [
        PoolLun(lun=int(n), size_gb=round(int(size) / (1 << 30), 3), volume_id=users.get(str(n)))
        for n, size in sorted(pool.luns or [])
    ]
