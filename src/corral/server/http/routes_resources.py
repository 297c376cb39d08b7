"""Routes for zones, clusters, offerings and hosts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from corral.api.common import Page
from corral.api.hosts import Host, HostCreate, HostUpdate
from corral.api.offerings import Offering, OfferingCreate
from corral.api.operations import Operation
from corral.api.zones import Cluster, ClusterCreate, ClusterUpdate, Zone, ZoneCreate
from corral.server.http.deps import Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import IF_MATCH, VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import hosts, inventory

router = APIRouter(route_class=VersionedRoute)
A: dict[str, Any] = {"status_code": 202, "response_model": Operation}


@router.get("/zones", response_model=Page[Zone], tags=["zones"])
async def list_zones(svc: Svc, caller: Annotated[Caller, allow("zone:list")], q: Listing) -> Any:
    return listed(await inventory.ZONES.list(svc.sessionmaker, q))


@router.get("/zones/{ref}", response_model=Zone, tags=["zones"])
async def get_zone(ref: str, svc: Svc, caller: Annotated[Caller, allow("zone:get")]) -> Zone:
    return await inventory.ZONES.get(svc.sessionmaker, ref)


@router.post("/zones", **A, tags=["zones"])
async def create_zone(
    spec: ZoneCreate, response: Response, svc: Svc, caller: Annotated[Caller, allow("zone:create")]
) -> Operation:
    return accepted(response, await inventory.create_zone(svc=svc, spec=spec))


@router.delete("/zones/{ref}", **A, dependencies=[IF_MATCH], tags=["zones"])
async def delete_zone(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("zone:delete")]
) -> Operation:
    return accepted(response, await inventory.delete_zone(svc=svc, ref=ref))


@router.get("/clusters", response_model=Page[Cluster], tags=["clusters"])
async def list_clusters(
    svc: Svc, caller: Annotated[Caller, allow("cluster:list")], q: Listing
) -> Any:
    return listed(await inventory.CLUSTERS.list(svc.sessionmaker, q))


@router.get("/clusters/{ref}", response_model=Cluster, tags=["clusters"])
async def get_cluster(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("cluster:get")]
) -> Cluster:
    return await inventory.CLUSTERS.get(svc.sessionmaker, ref)


@router.post("/clusters", **A, tags=["clusters"])
async def create_cluster(
    spec: ClusterCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("cluster:create")],
) -> Operation:
    return accepted(response, await inventory.create_cluster(svc=svc, spec=spec))


@router.patch("/clusters/{ref}", **A, dependencies=[IF_MATCH], tags=["clusters"])
async def update_cluster(
    ref: str,
    spec: ClusterUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("cluster:update")],
) -> Operation:
    return accepted(response, await inventory.update_cluster(svc=svc, ref=ref, spec=spec))


@router.delete("/clusters/{ref}", **A, dependencies=[IF_MATCH], tags=["clusters"])
async def delete_cluster(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("cluster:delete")]
) -> Operation:
    return accepted(response, await inventory.delete_cluster(svc=svc, ref=ref))


@router.get("/offerings", response_model=Page[Offering], tags=["offerings"])
async def list_offerings(
    svc: Svc, caller: Annotated[Caller, allow("offering:list")], q: Listing
) -> Any:
    return listed(await inventory.OFFERINGS.list(svc.sessionmaker, q))


@router.get("/offerings/{ref}", response_model=Offering, tags=["offerings"])
async def get_offering(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("offering:get")]
) -> Offering:
    return await inventory.OFFERINGS.get(svc.sessionmaker, ref)


@router.post("/offerings", **A, tags=["offerings"])
async def create_offering(
    spec: OfferingCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("offering:create")],
) -> Operation:
    return accepted(response, await inventory.create_offering(svc=svc, spec=spec))


@router.delete("/offerings/{ref}", **A, dependencies=[IF_MATCH], tags=["offerings"])
async def delete_offering(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("offering:delete")]
) -> Operation:
    return accepted(response, await inventory.delete_offering(svc=svc, ref=ref))


@router.get("/hosts", response_model=Page[Host], tags=["hosts"])
async def list_hosts(svc: Svc, caller: Annotated[Caller, allow("host:list")], q: Listing) -> Any:
    return listed(await hosts.HOSTS.list(svc.sessionmaker, q))


@router.get("/hosts/{ref}", response_model=Host, tags=["hosts"])
async def get_host(ref: str, svc: Svc, caller: Annotated[Caller, allow("host:get")]) -> Host:
    return await hosts.HOSTS.get(svc.sessionmaker, ref)


@router.post("/hosts", **A, tags=["hosts"])
async def add_host(
    spec: HostCreate, response: Response, svc: Svc, caller: Annotated[Caller, allow("host:create")]
) -> Operation:
    return accepted(response, await hosts.add_host(svc=svc, spec=spec))


@router.patch("/hosts/{ref}", **A, dependencies=[IF_MATCH], tags=["hosts"])
async def update_host(
    ref: str,
    spec: HostUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("host:update")],
) -> Operation:
    return accepted(response, await hosts.update_host(svc=svc, ref=ref, spec=spec))


@router.delete("/hosts/{ref}", **A, dependencies=[IF_MATCH], tags=["hosts"])
async def remove_host(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("host:delete")]
) -> Operation:
    return accepted(response, await hosts.remove_host(svc=svc, ref=ref))
