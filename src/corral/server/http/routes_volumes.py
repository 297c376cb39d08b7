"""Routes for data volumes: ``/volumes``, their attach/detach/resize actions, and
``/vms/{ref}/volumes``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from corral.api.common import Page
from corral.api.operations import Operation
from corral.api.volumes import (
    Volume,
    VolumeAttach,
    VolumeCreate,
    VolumeMove,
    VolumeResize,
    VolumeUpdate,
)
from corral.server.db.tables import VolumeAttachmentRow, VolumeRow
from corral.server.http.deps import EXPENSIVE, IfMatch, Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import vms, volumes

router = APIRouter(route_class=VersionedRoute)
T: list[str | Enum] = ["volumes"]
A: dict[str, Any] = {"status_code": 202, "response_model": Operation, "tags": T}


@router.get("/volumes", response_model=Page[Volume], tags=T)
async def list_volumes(
    svc: Svc, caller: Annotated[Caller, allow("volume:list")], q: Listing
) -> Any:
    return listed(await volumes.VOLUMES.list(svc.sessionmaker, q, volumes.visible_volumes(caller)))


@router.get("/volumes/{ref}", response_model=Volume, tags=T)
async def get_volume(ref: str, svc: Svc, caller: Annotated[Caller, allow("volume:get")]) -> Volume:
    return await volumes.VOLUMES.get(svc.sessionmaker, ref, volumes.visible_volumes(caller))


@router.get("/vms/{ref}/volumes", response_model=Page[Volume], tags=["vms", "volumes"])
async def list_vm_volumes(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("volume:list")], q: Listing
) -> Any:
    """The data volumes attached to a VM (the Query API applies as on ``/volumes``)."""
    vm = await vms.VMS.get(svc.sessionmaker, ref, vms.visible_vms(caller))
    attached = VolumeRow.id.in_(
        VolumeAttachmentRow.__table__.select()
        .with_only_columns(VolumeAttachmentRow.volume_id)
        .where(VolumeAttachmentRow.vm_id == vm.id)
    )
    where = volumes.visible_volumes(caller) & attached
    return listed(await volumes.VOLUMES.list(svc.sessionmaker, q, where))


@router.post("/volumes", **A, dependencies=[EXPENSIVE])
async def create_volume(
    spec: VolumeCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:create")],
) -> Operation:
    return accepted(response, await volumes.create_volume(svc=svc, spec=spec, caller=caller))


@router.patch("/volumes/{ref}", **A)
async def update_volume(
    ref: str,
    spec: VolumeUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:update")],
    if_match: IfMatch = None,
) -> Operation:
    op = await volumes.update_volume(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.post("/volumes/{ref}/attach", **A)
async def attach_volume(
    ref: str,
    spec: VolumeAttach,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:update")],
    if_match: IfMatch = None,
) -> Operation:
    op = await volumes.attach(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.post("/volumes/{ref}/detach", **A)
async def detach_volume(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:update")],
    vm: Annotated[str | None, Query(max_length=64, description="VM (shareable volumes)")] = None,
    timeout: Annotated[float, Query(ge=0, le=600, description="seconds for the guest")] = 30.0,
    if_match: IfMatch = None,
) -> Operation:
    op = await volumes.detach(
        svc=svc, ref=ref, caller=caller, vm_ref=vm, timeout=timeout, if_match=if_match
    )
    return accepted(response, op)


@router.post("/volumes/{ref}/resize", **A)
async def resize_volume(
    ref: str,
    spec: VolumeResize,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:update")],
    if_match: IfMatch = None,
) -> Operation:
    op = await volumes.resize(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.post("/volumes/{ref}/move", **A)
async def move_volume(
    ref: str,
    spec: VolumeMove,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Move a detached volume without snapshots to another pool (copied, then the old copy
    deleted; its id, name and size stay)."""
    op = await volumes.move(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.delete("/volumes/{ref}", **A)
async def delete_volume(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("volume:delete")],
    if_match: IfMatch = None,
    expunge: bool = False,
) -> Operation:
    """Delete the volume: to the recycle bin under the deletion policy (``delayed``,
    ``never``), at once with ``expunge=true`` or the ``immediate`` policy."""
    op = await volumes.delete(svc=svc, ref=ref, caller=caller, if_match=if_match, expunge=expunge)
    return accepted(response, op)
