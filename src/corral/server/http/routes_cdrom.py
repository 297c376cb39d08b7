"""Routes for a VM's CD-ROM drive and boot order: ``/vms/{ref}/cdrom``, ``/vms/{ref}/boot-order``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from corral.api.cdrom import BootOrder, CdromInsert
from corral.api.operations import Operation
from corral.server.http.deps import IfMatch, Svc, accepted, allow
from corral.server.http.versioning import VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import cdrom

router = APIRouter(route_class=VersionedRoute)
A: dict[str, Any] = {"status_code": 202, "response_model": Operation, "tags": ["vms"]}


@router.post("/vms/{ref}/cdrom", **A)
async def insert_cdrom(
    ref: str,
    spec: CdromInsert,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Put an ISO image in the VM's CD-ROM drive (live if the VM runs)."""
    op = await cdrom.insert(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.delete("/vms/{ref}/cdrom", **A)
async def eject_cdrom(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Eject the VM's CD-ROM (live if the VM runs)."""
    return accepted(response, await cdrom.eject(svc=svc, ref=ref, caller=caller, if_match=if_match))


@router.post("/vms/{ref}/boot-order", **A)
async def set_boot_order(
    ref: str,
    spec: BootOrder,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Set what the VM boots from, in order (``["cdrom", "hd"]``); applies at its next boot."""
    op = await cdrom.set_boot_order(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)
