"""Routes for VM NICs: ``/vms/{ref}/nics`` (a NIC by id, MAC or device number)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from corral.api.nics import Nic, NicCreate, NicUpdate
from corral.api.operations import Operation
from corral.server.http.deps import Svc, accepted, allow
from corral.server.http.versioning import VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import vm_nics

router = APIRouter(route_class=VersionedRoute)
A: dict[str, Any] = {"status_code": 202, "response_model": Operation}


@router.get("/vms/{ref}/nics", response_model=list[Nic], tags=["vms"])
async def list_nics(ref: str, svc: Svc, caller: Annotated[Caller, allow("vm:get")]) -> list[Nic]:
    """The VM's NICs in device order, with their addresses and security groups."""
    return await vm_nics.list_nics(svc=svc, ref=ref, caller=caller)


@router.get("/vms/{ref}/nics/{nic}", response_model=Nic, tags=["vms"])
async def get_nic(ref: str, nic: str, svc: Svc, caller: Annotated[Caller, allow("vm:get")]) -> Nic:
    return await vm_nics.get_nic(svc=svc, ref=ref, nic=nic, caller=caller)


@router.post("/vms/{ref}/nics", **A, tags=["vms"])
async def add_nic(
    ref: str,
    spec: NicCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
) -> Operation:
    """Add a NIC (hot-plugged when the VM runs); its addresses are allocated at once."""
    return accepted(response, await vm_nics.add_nic(svc=svc, ref=ref, spec=spec, caller=caller))


@router.patch("/vms/{ref}/nics/{nic}", **A, tags=["vms"])
async def update_nic(
    ref: str,
    nic: str,
    spec: NicUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
) -> Operation:
    """Change the NIC's security groups, default policies, spoofing protection or allowed
    address pairs (a finished operation); the hosts concerned get it at once."""
    op = await vm_nics.update_nic(svc=svc, ref=ref, nic=nic, spec=spec, caller=caller)
    return accepted(response, op)


@router.delete("/vms/{ref}/nics/{nic}", **A, tags=["vms"])
async def remove_nic(
    ref: str,
    nic: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
    timeout: Annotated[float, Query(ge=0, le=600)] = 30.0,
) -> Operation:
    """Unplug the NIC (the guest gets ``timeout`` seconds to release it) and return its
    addresses."""
    op = await vm_nics.remove_nic(svc=svc, ref=ref, nic=nic, caller=caller, timeout=timeout)
    return accepted(response, op)
