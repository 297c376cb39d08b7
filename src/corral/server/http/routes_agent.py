"""Routes agents call that are not hot (image downloads, captured and published image uploads;
heartbeats, events and task callbacks are in ``agent_fast``). Debug routes."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from corral.api.errors import Forbidden
from corral.server.http.deps import AgentHost, Svc, allow
from corral.server.identity.caller import Caller
from corral.server.services import images

router = APIRouter(prefix="/agent", tags=["agent"], include_in_schema=False)
debug = APIRouter(prefix="/debug", tags=["debug"], include_in_schema=False)


@router.get("/images/{image_id}/data", response_class=FileResponse)
async def image_data(image_id: str, host: AgentHost, svc: Svc) -> FileResponse:
    _, path = await images.ready_path(svc=svc, ref=image_id)
    return FileResponse(path, media_type="application/octet-stream")


@router.put("/images/{image_id}/data", status_code=204)
async def captured_image_data(image_id: str, request: Request, host: AgentHost, svc: Svc) -> None:
    """The bytes of an image an agent captured (``image.capture``: only for images waiting for
    a capture) or of a host-bound base it publishes (``image.publish``: only from the image's
    host while the operation runs); see ``images.store_from_agent``."""
    await images.store_from_agent(
        svc=svc, image_id=image_id, host_id=host.id, chunks=request.stream()
    )


class FaultRequest(BaseModel):
    workflow: str
    step: str
    when: Literal["before", "after"] = "before"
    times: int = 1


@debug.post("/faults")
async def inject(
    req: FaultRequest, svc: Svc, caller: Annotated[Caller, allow("debug:faults")]
) -> dict[str, int]:
    if not svc.settings.fault_injection:
        raise Forbidden("fault injection is off (start the server with CORRAL_FAULT_INJECTION=1)")
    svc.engine.faults.inject(req.workflow, req.step, req.when, req.times)
    return {"planned": sum(svc.engine.faults.planned.values())}


@debug.delete("/faults")
async def clear(svc: Svc, caller: Annotated[Caller, allow("debug:faults")]) -> dict[str, int]:
    if not svc.settings.fault_injection:
        raise Forbidden("fault injection is off")
    svc.engine.faults.clear()
    return {"planned": 0}
