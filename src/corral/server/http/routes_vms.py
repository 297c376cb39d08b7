"""Routes for VMs and images."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from corral.api.common import Page
from corral.api.images import Image, ImageCreate
from corral.api.operations import Operation
from corral.api.vms import Vm, VmAction, VmCreate, VmResize, VmStop
from corral.server.http.deps import Listing, Svc, User, accepted, filters_from
from corral.server.services import images, vms

router = APIRouter()
A: dict[str, Any] = {"status_code": 202, "response_model": Operation}


@router.get("/vms", response_model=Page[Vm], tags=["vms"])
async def list_vms(request: Request, svc: Svc, _: User, q: Listing) -> Page[Vm]:
    allowed = {"name", "status", "power_state", "host_id", "image_id", "offering_id"}
    return await vms.VMS.list(svc.sessionmaker, q, filters_from(request, allowed))


@router.get("/vms/{ref}", response_model=Vm, tags=["vms"])
async def get_vm(ref: str, svc: Svc, _: User) -> Vm:
    return await vms.VMS.get(svc.sessionmaker, ref)


@router.post("/vms", **A, tags=["vms"])
async def create_vm(spec: VmCreate, response: Response, svc: Svc, _: User) -> Operation:
    return accepted(response, await vms.create_vm(svc=svc, spec=spec))


@router.delete("/vms/{ref}", **A, tags=["vms"])
async def delete_vm(ref: str, response: Response, svc: Svc, _: User) -> Operation:
    return accepted(response, await vms.delete(svc=svc, ref=ref))


@router.post("/vms/{ref}/resize", **A, tags=["vms"])
async def resize_vm(ref: str, spec: VmResize, response: Response, svc: Svc, _: User) -> Operation:
    return accepted(response, await vms.resize(svc=svc, ref=ref, spec=spec))


@router.post("/vms/{ref}/stop", **A, tags=["vms"])
async def stop_vm(
    ref: str, response: Response, svc: Svc, _: User, spec: VmStop | None = None
) -> Operation:
    op = await vms.act(svc=svc, ref=ref, action=VmAction.stop, stop=spec or VmStop())
    return accepted(response, op)


def _action_route(action: VmAction) -> None:
    async def handler(ref: str, response: Response, svc: Svc, _: User) -> Operation:
        return accepted(response, await vms.act(svc=svc, ref=ref, action=action))

    handler.__name__ = f"{action.value}_vm"
    router.post(f"/vms/{{ref}}/{action.value}", **A, tags=["vms"], name=f"{action.value}_vm")(
        handler
    )


for _action in (VmAction.start, VmAction.reboot, VmAction.pause, VmAction.resume):
    _action_route(_action)


@router.get("/images", response_model=Page[Image], tags=["images"])
async def list_images(request: Request, svc: Svc, _: User, q: Listing) -> Page[Image]:
    return await images.IMAGES.list(svc.sessionmaker, q, filters_from(request, {"name", "status"}))


@router.get("/images/{ref}", response_model=Image, tags=["images"])
async def get_image(ref: str, svc: Svc, _: User) -> Image:
    return await images.IMAGES.get(svc.sessionmaker, ref)


@router.post("/images", **A, tags=["images"])
async def create_image(spec: ImageCreate, response: Response, svc: Svc, _: User) -> Operation:
    return accepted(response, await images.create_image(svc=svc, spec=spec))


@router.put("/images/{ref}/data", **A, tags=["images"])
async def upload_image(
    ref: str, request: Request, response: Response, svc: Svc, _: User
) -> Operation:
    return accepted(response, await images.upload(svc=svc, ref=ref, chunks=request.stream()))


@router.get("/images/{ref}/data", tags=["images"], response_class=FileResponse)
async def download_image(ref: str, svc: Svc, _: User) -> FileResponse:
    row, path = await images.ready_path(svc=svc, ref=ref)
    return FileResponse(
        path, media_type="application/octet-stream", filename=f"{row.name}.{row.format}"
    )


@router.delete("/images/{ref}", **A, tags=["images"])
async def delete_image(ref: str, response: Response, svc: Svc, _: User) -> Operation:
    return accepted(response, await images.delete_image(svc=svc, ref=ref))
