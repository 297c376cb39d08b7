"""Routes for VMs and images."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from corral.api.common import Page
from corral.api.images import Image, ImageCreate
from corral.api.operations import Operation
from corral.api.vms import Vm, VmAction, VmClone, VmCreate, VmResize, VmStop
from corral.server.http.deps import EXPENSIVE, IfMatch, Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import IF_MATCH, VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import images, vm_clone, vms

router = APIRouter(route_class=VersionedRoute)
A: dict[str, Any] = {"status_code": 202, "response_model": Operation}


@router.get("/vms", response_model=Page[Vm], tags=["vms"])
async def list_vms(svc: Svc, caller: Annotated[Caller, allow("vm:list")], q: Listing) -> Any:
    return listed(await vms.VMS.list(svc.sessionmaker, q, vms.visible_vms(caller)))


@router.get("/vms/{ref}", response_model=Vm, tags=["vms"])
async def get_vm(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("vm:get")]
) -> Vm:
    vm = await vms.VMS.get(svc.sessionmaker, ref, vms.visible_vms(caller))
    response.headers["ETag"] = vm.etag
    return vm


@router.post("/vms", **A, dependencies=[EXPENSIVE], tags=["vms"])
async def create_vm(
    spec: VmCreate, response: Response, svc: Svc, caller: Annotated[Caller, allow("vm:create")]
) -> Operation:
    return accepted(response, await vms.create_vm(svc=svc, spec=spec, caller=caller))


@router.delete("/vms/{ref}", **A, tags=["vms"])
async def delete_vm(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:delete")],
    if_match: IfMatch = None,
    expunge: bool = False,
) -> Operation:
    """Delete the VM: to the recycle bin under the deletion policy (``delayed``, ``never``),
    at once with ``expunge=true`` or the ``immediate`` policy."""
    op = await vms.delete(svc=svc, ref=ref, caller=caller, if_match=if_match, expunge=expunge)
    return accepted(response, op)


@router.post("/vms/{ref}/clone", **A, dependencies=[EXPENSIVE], tags=["vms"])
async def clone_vm(
    ref: str,
    spec: VmClone,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:create")],
) -> Operation:
    """Clone a stopped VM (``mode: full``): its disk is captured once into ``<name>-base``
    and ``count`` clones are created from it; the operation ends when they exist."""
    return accepted(response, await vm_clone.clone_vm(svc=svc, ref=ref, spec=spec, caller=caller))


@router.post("/vms/{ref}/resize", **A, tags=["vms"])
async def resize_vm(
    ref: str,
    spec: VmResize,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:update")],
    if_match: IfMatch = None,
) -> Operation:
    return accepted(
        response, await vms.resize(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    )


@router.post("/vms/{ref}/stop", **A, tags=["vms"])
async def stop_vm(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("vm:power")],
    spec: VmStop | None = None,
    if_match: IfMatch = None,
) -> Operation:
    op = await vms.act(
        svc=svc,
        ref=ref,
        action=VmAction.stop,
        stop=spec or VmStop(),
        caller=caller,
        if_match=if_match,
    )
    return accepted(response, op)


def _action_route(action: VmAction) -> None:
    async def handler(
        ref: str,
        response: Response,
        svc: Svc,
        caller: Annotated[Caller, allow("vm:power")],
        if_match: IfMatch = None,
    ) -> Operation:
        return accepted(
            response,
            await vms.act(svc=svc, ref=ref, action=action, caller=caller, if_match=if_match),
        )

    handler.__name__ = f"{action.value}_vm"
    router.post(f"/vms/{{ref}}/{action.value}", **A, tags=["vms"], name=f"{action.value}_vm")(
        handler
    )


for _action in (VmAction.start, VmAction.reboot, VmAction.pause, VmAction.resume):
    _action_route(_action)


@router.get("/images", response_model=Page[Image], tags=["images"])
async def list_images(svc: Svc, caller: Annotated[Caller, allow("image:list")], q: Listing) -> Any:
    return listed(await images.IMAGES.list(svc.sessionmaker, q, images.visible_images(caller)))


@router.get("/images/{ref}", response_model=Image, tags=["images"])
async def get_image(ref: str, svc: Svc, caller: Annotated[Caller, allow("image:get")]) -> Image:
    return await images.IMAGES.get(svc.sessionmaker, ref, images.visible_images(caller))


@router.post("/images", **A, dependencies=[EXPENSIVE], tags=["images"])
async def create_image(
    spec: ImageCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("image:create")],
) -> Operation:
    return accepted(response, await images.create_image(svc=svc, spec=spec, caller=caller))


@router.put("/images/{ref}/data", **A, dependencies=[IF_MATCH, EXPENSIVE], tags=["images"])
async def upload_image(
    ref: str,
    request: Request,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("image:update")],
) -> Operation:
    return accepted(
        response, await images.upload(svc=svc, ref=ref, chunks=request.stream(), caller=caller)
    )


@router.get("/images/{ref}/data", tags=["images"], response_class=FileResponse)
async def download_image(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("image:get")]
) -> FileResponse:
    row, path = await images.ready_path(svc=svc, ref=ref, caller=caller)
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"{row.name}.{row.format}"
    )


@router.delete("/images/{ref}", **A, dependencies=[IF_MATCH], tags=["images"])
async def delete_image(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("image:delete")],
    expunge: bool = False,
) -> Operation:
    """Delete the image: to the recycle bin under the deletion policy (``delayed``,
    ``never``), at once with ``expunge=true`` or the ``immediate`` policy."""
    op = await images.delete_image(svc=svc, ref=ref, caller=caller, expunge=expunge)
    return accepted(response, op)
