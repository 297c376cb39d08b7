"""Routes agents call: heartbeats, task callbacks, VM events, image downloads. Debug routes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from pydantic import BaseModel

from corral.api.agent import Heartbeat, TaskStatus, VmEvents
from corral.api.errors import Forbidden, InvalidInput
from corral.server.http.deps import AgentHost, Svc, User
from corral.server.services import hosts, images

router = APIRouter(prefix="/agent", tags=["agent"], include_in_schema=False)
debug = APIRouter(prefix="/debug", tags=["debug"], include_in_schema=False)


@router.post("/heartbeat")
async def heartbeat(beat: Heartbeat, host: AgentHost, svc: Svc) -> dict[str, str]:
    if beat.host_id != host.id:
        raise InvalidInput("heartbeat for another host", host_id=beat.host_id)
    await hosts.record_heartbeat(svc=svc, host=host, beat=beat)
    return {"status": "ok"}


@router.post("/tasks/{task_id}")
async def task_done(task_id: str, status: TaskStatus, host: AgentHost, svc: Svc) -> dict[str, bool]:
    return {"delivered": svc.agents.deliver(status)}


@router.post("/events")
async def events(batch: VmEvents, host: AgentHost, svc: Svc) -> dict[str, int]:
    await hosts.record_events(svc=svc, host=host, events=batch.events)
    return {"received": len(batch.events)}


@router.get("/images/{image_id}/data", response_class=FileResponse)
async def image_data(image_id: str, host: AgentHost, svc: Svc) -> FileResponse:
    _, path = await images.ready_path(svc=svc, ref=image_id)
    return FileResponse(path, media_type="application/octet-stream")


class FaultRequest(BaseModel):
    workflow: str
    step: str
    when: Literal["before", "after"] = "before"
    times: int = 1


@debug.post("/faults")
async def inject(req: FaultRequest, svc: Svc, _: User) -> dict[str, int]:
    if not svc.settings.fault_injection:
        raise Forbidden("fault injection is off (start the server with CORRAL_FAULT_INJECTION=1)")
    svc.engine.faults.inject(req.workflow, req.step, req.when, req.times)
    return {"planned": sum(svc.engine.faults.planned.values())}


@debug.delete("/faults")
async def clear(svc: Svc, _: User) -> dict[str, int]:
    if not svc.settings.fault_injection:
        raise Forbidden("fault injection is off")
    svc.engine.faults.clear()
    return {"planned": 0}
