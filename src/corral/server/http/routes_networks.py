"""Routes for networks: ``/switches`` (and their clusters), ``/port-groups``, ``/subnets`` and
the addresses held on a subnet. Platform admins manage them; every user may read port groups
and subnets (not who holds which address)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from corral.api.common import MAX_PAGE, Page
from corral.api.networks import (
    IpAllocation,
    IpAllocationHeld,
    IpAllocationRequest,
    PortGroup,
    PortGroupCreate,
    PortGroupUpdate,
    Subnet,
    SubnetCreate,
    SubnetUpdate,
    Switch,
    SwitchCreate,
    SwitchUpdate,
)
from corral.api.operations import Operation
from corral.server.http.deps import Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import IF_MATCH, VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import networks, subnets

router = APIRouter(route_class=VersionedRoute)
SW: list[str | Enum] = ["switches"]
PG: list[str | Enum] = ["port-groups"]
SN: list[str | Enum] = ["subnets"]
A: dict[str, Any] = {"status_code": 202, "response_model": Operation}


# switches


@router.get("/switches", response_model=Page[Switch], tags=SW)
async def list_switches(
    svc: Svc, caller: Annotated[Caller, allow("switch:list")], q: Listing
) -> Any:
    return listed(await networks.SWITCHES.list(svc.sessionmaker, q))


@router.get("/switches/{ref}", response_model=Switch, tags=SW)
async def get_switch(ref: str, svc: Svc, caller: Annotated[Caller, allow("switch:get")]) -> Switch:
    return await networks.SWITCHES.get(svc.sessionmaker, ref)


@router.post("/switches", **A, tags=SW)
async def create_switch(
    spec: SwitchCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("switch:create")],
) -> Operation:
    """A distributed switch on the hosts of ``clusters``, with per-host ``uplinks``."""
    return accepted(response, await networks.create_switch(svc=svc, spec=spec))


@router.patch("/switches/{ref}", **A, tags=SW, dependencies=[IF_MATCH])
async def update_switch(
    ref: str,
    spec: SwitchUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("switch:update")],
) -> Operation:
    """Change the given fields; ``uplinks`` replaces every per-host uplink."""
    return accepted(response, await networks.update_switch(svc=svc, ref=ref, spec=spec))


@router.post("/switches/{ref}/clusters/{cluster}", **A, tags=SW, dependencies=[IF_MATCH])
async def attach_switch_cluster(
    ref: str,
    cluster: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("switch:update")],
) -> Operation:
    """Attach a cluster: its hosts carry the switch (attached already: nothing changes)."""
    return accepted(response, await networks.attach_cluster(svc=svc, ref=ref, cluster=cluster))


@router.delete("/switches/{ref}/clusters/{cluster}", **A, tags=SW, dependencies=[IF_MATCH])
async def detach_switch_cluster(
    ref: str,
    cluster: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("switch:update")],
) -> Operation:
    """Detach a cluster from the switch (not attached: nothing changes)."""
    return accepted(response, await networks.detach_cluster(svc=svc, ref=ref, cluster=cluster))


@router.delete("/switches/{ref}", **A, tags=SW, dependencies=[IF_MATCH])
async def delete_switch(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("switch:delete")]
) -> Operation:
    """409 ``in_use`` (listing them) while the switch has port groups."""
    return accepted(response, await networks.delete_switch(svc=svc, ref=ref))


# port groups


@router.get("/port-groups", response_model=Page[PortGroup], tags=PG)
async def list_port_groups(
    svc: Svc, caller: Annotated[Caller, allow("port_group:list")], q: Listing
) -> Any:
    """Port groups; ``switch=NAME`` (or ``q=switch.name=NAME``, ``switch_id=ID``) filters by
    switch."""
    return listed(await networks.PORT_GROUPS.list(svc.sessionmaker, q))


@router.get("/port-groups/{ref}", response_model=PortGroup, tags=PG)
async def get_port_group(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("port_group:get")]
) -> PortGroup:
    return await networks.PORT_GROUPS.get(svc.sessionmaker, ref)


@router.post("/port-groups", **A, tags=PG)
async def create_port_group(
    spec: PortGroupCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("port_group:create")],
) -> Operation:
    """One flat group per switch, a VLAN id once per switch, a VNI once in the platform (else
    409 ``name_taken`` with ``reason=segment_taken`` naming the port group that has it)."""
    return accepted(response, await networks.create_port_group(svc=svc, spec=spec))


@router.patch("/port-groups/{ref}", **A, tags=PG, dependencies=[IF_MATCH])
async def update_port_group(
    ref: str,
    spec: PortGroupUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("port_group:update")],
) -> Operation:
    return accepted(response, await networks.update_port_group(svc=svc, ref=ref, spec=spec))


@router.delete("/port-groups/{ref}", **A, tags=PG, dependencies=[IF_MATCH])
async def delete_port_group(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("port_group:delete")]
) -> Operation:
    """409 ``in_use`` (listing them) while the port group has subnets."""
    return accepted(response, await networks.delete_port_group(svc=svc, ref=ref))


# subnets


@router.get("/subnets", response_model=Page[Subnet], tags=SN)
async def list_subnets(
    svc: Svc, caller: Annotated[Caller, allow("subnet:list")], q: Listing
) -> Any:
    """Subnets; ``port_group=NAME`` (or ``port_group_id=ID``) filters by port group."""
    return listed(await subnets.SUBNETS.list(svc.sessionmaker, q))


@router.get("/subnets/{ref}", response_model=Subnet, tags=SN)
async def get_subnet(ref: str, svc: Svc, caller: Annotated[Caller, allow("subnet:get")]) -> Subnet:
    return await subnets.SUBNETS.get(svc.sessionmaker, ref)


@router.post("/subnets", **A, tags=SN)
async def create_subnet(
    spec: SubnetCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("subnet:create")],
) -> Operation:
    """422 ``invalid_input`` with the offending items in ``context`` for ranges outside the
    CIDR, reversed or overlapping, a gateway or reserved address outside it, a CIDR that
    overlaps another subnet of the port group."""
    return accepted(response, await subnets.create_subnet(svc=svc, spec=spec))


@router.patch("/subnets/{ref}", **A, tags=SN, dependencies=[IF_MATCH])
async def update_subnet(
    ref: str,
    spec: SubnetUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("subnet:update")],
) -> Operation:
    """``ranges`` (empty: the default) may leave allocated addresses outside (they stay);
    newly ``reserved`` addresses must not be allocated (409 ``in_use``)."""
    return accepted(response, await subnets.update_subnet(svc=svc, ref=ref, spec=spec))


@router.delete("/subnets/{ref}", **A, tags=SN, dependencies=[IF_MATCH])
async def delete_subnet(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("subnet:delete")]
) -> Operation:
    """409 ``in_use`` while addresses are allocated (the first ones listed)."""
    return accepted(response, await subnets.delete_subnet(svc=svc, ref=ref))


@router.get("/subnets/{ref}/allocations", response_model=Page[IpAllocation], tags=SN)
async def list_subnet_allocations(
    ref: str,
    svc: Svc,
    caller: Annotated[Caller, allow("subnet:get")],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Page[IpAllocation]:
    """The subnet's allocated addresses in address order; the NIC and VM holding each only
    for platform admins (``subnet:update``)."""
    return await subnets.allocations(
        svc, ref, limit=limit, offset=offset, holders=caller.can("subnet:update")
    )


@router.post("/subnets/{ref}/allocations", status_code=202, response_model=IpAllocationHeld,
             tags=SN)  # fmt: skip
async def hold_subnet_address(
    ref: str,
    spec: IpAllocationRequest,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("subnet:update")],
) -> IpAllocationHeld:
    """Hold an address for later use: ``address`` (422 unless a host address of the CIDR, not
    the gateway nor reserved; 409 ``in_use`` if allocated) or the lowest free one of the ranges
    (409 ``conflict`` with ``reason=subnet_full`` when none is left). The finished operation
    carries the ``allocation``."""
    held = await subnets.hold(svc=svc, ref=ref, address=spec.address)
    response.headers["Location"] = f"/api/v1/operations/{held.id}"
    return held


@router.delete("/subnets/{ref}/allocations/{address}", **A, tags=SN)
async def release_subnet_address(
    ref: str,
    address: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("subnet:update")],
) -> Operation:
    """Release a held address (404 if not allocated; 409 ``in_use`` if a NIC uses it)."""
    return accepted(response, await subnets.release_held(svc=svc, ref=ref, address=address))
