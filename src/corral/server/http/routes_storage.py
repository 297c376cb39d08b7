"""Routes for storage pools (platform admins): ``/storage-pools`` and their attached clusters."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from corral.api.common import Page
from corral.api.operations import Operation
from corral.api.storage import (
    PoolClusterAttach,
    PoolHostReport,
    PoolLun,
    StoragePool,
    StoragePoolCreate,
    StoragePoolUpdate,
)
from corral.server.http.deps import Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import IF_MATCH, VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import pool_sync, pools

router = APIRouter(route_class=VersionedRoute)
A: dict[str, Any] = {"status_code": 202, "response_model": Operation, "tags": ["storage-pools"]}
T: list[str | Enum] = ["storage-pools"]


@router.get("/storage-pools", response_model=Page[StoragePool], tags=T)
async def list_storage_pools(
    svc: Svc, caller: Annotated[Caller, allow("storage_pool:list")], q: Listing
) -> Any:
    return listed(await pools.POOLS.list(svc.sessionmaker, q))


@router.get("/storage-pools/{ref}", response_model=StoragePool, tags=T)
async def get_storage_pool(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("storage_pool:get")]
) -> StoragePool:
    return await pools.POOLS.get(svc.sessionmaker, ref)


@router.get("/storage-pools/{ref}/hosts", response_model=list[PoolHostReport], tags=T)
async def get_storage_pool_hosts(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("storage_pool:get")]
) -> list[PoolHostReport]:
    """What each host of the attached clusters last reported of the pool: whether it can use
    it (``ok``, else ``error``) and the sizes it sees."""
    return await pool_sync.pool_hosts(svc, ref)


@router.get("/storage-pools/{ref}/luns", response_model=list[PoolLun], tags=T)
async def get_storage_pool_luns(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("storage_pool:get")]
) -> list[PoolLun]:
    """An iscsi pool's LUNs (as its hosts last reported the target's) and the volume on each:
    a volume on the pool gets the smallest free LUN that holds its size."""
    return await pools.pool_luns(svc, ref)


@router.post("/storage-pools", **A)
async def create_storage_pool(
    spec: StoragePoolCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("storage_pool:create")],
) -> Operation:
    return accepted(response, await pools.create_pool(svc=svc, spec=spec))


@router.patch("/storage-pools/{ref}", **A, dependencies=[IF_MATCH])
async def update_storage_pool(
    ref: str,
    spec: StoragePoolUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("storage_pool:update")],
) -> Operation:
    return accepted(response, await pools.update_pool(svc=svc, ref=ref, spec=spec))


@router.post("/storage-pools/{ref}/clusters", **A, dependencies=[IF_MATCH])
async def attach_storage_pool_cluster(
    ref: str,
    spec: PoolClusterAttach,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("storage_pool:update")],
) -> Operation:
    """Attach a cluster: its hosts may use the pool (attached already: nothing changes)."""
    return accepted(response, await pools.attach_cluster(svc=svc, ref=ref, cluster=spec.cluster))


@router.delete("/storage-pools/{ref}/clusters/{cluster}", **A, dependencies=[IF_MATCH])
async def detach_storage_pool_cluster(
    ref: str,
    cluster: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("storage_pool:update")],
) -> Operation:
    """Detach a cluster from the pool (not attached: nothing changes)."""
    return accepted(response, await pools.detach_cluster(svc=svc, ref=ref, cluster=cluster))


@router.delete("/storage-pools/{ref}", **A, dependencies=[IF_MATCH])
async def delete_storage_pool(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("storage_pool:delete")],
    cascade: Annotated[
        bool, Query(description="also delete the pool's volumes (none may be attached)")
    ] = False,
) -> Operation:
    """Delete the pool: only when it holds no volumes (or with ``cascade=true``, deleting them
    first), and, while clusters are attached, only in ``maintenance`` (else 409)."""
    return accepted(response, await pools.delete_pool(svc=svc, ref=ref, cascade=cascade))
