"""Routes of one served host (``/v1/...``); every route but health, attach and enroll needs the
bearer (enrollment routes: ``enroll.py``).

Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import Field

from corral.agent.runtime import HostRuntime, agent_version
from corral.api.agent import AgentTask, AttachRequest, AttachResponse, TaskStatus, VmReport
from corral.api.common import Model
from corral.api.errors import CorralError, ErrorBody, Forbidden
from corral.api.hosts import HostFacts

RUNTIME_KEY = "corral.runtime"
"""ASGI scope key under which the agent's dispatcher names the runtime a request is for."""


async def get_runtime(request: Request) -> HostRuntime:
    """The runtime the dispatcher chose for this request, else the app's own."""
    runtime: HostRuntime = request.scope.get(RUNTIME_KEY) or request.app.state.runtime
    return runtime


async def authenticated(
    runtime: Annotated[HostRuntime, Depends(get_runtime)],
    authorization: Annotated[str | None, Header()] = None,
) -> HostRuntime:
    runtime.authenticate(authorization)
    return runtime


Runtime = Annotated[HostRuntime, Depends(get_runtime)]
Authed = Annotated[HostRuntime, Depends(authenticated)]


class Health(Model):
    status: str = "ok"
    attached: bool
    version: str


class FaultRequest(Model):
    """Make the next ``times`` calls of ``op`` fail with the error ``code`` (``injected_fault``)."""

    op: str = Field(min_length=1, max_length=100, examples=["vm.start", "agent.disk.create"])
    times: int = Field(1, ge=1, le=10_000)
    code: str | None = None
    message: str | None = None


class Faults(Model):
    pending: dict[str, int]


router = APIRouter(prefix="/v1")


@router.get("/health")
async def health(runtime: Runtime) -> Health:
    return Health(attached=runtime.attachment.current is not None, version=agent_version())


@router.post("/attach")
async def attach(
    body: AttachRequest,
    runtime: Runtime,
    authorization: Annotated[str | None, Header()] = None,
) -> AttachResponse:
    return await runtime.attach(body, authorization=authorization)


@router.get("/facts")
async def facts(runtime: Authed) -> HostFacts:
    return await runtime.facts()


@router.post("/tasks")
async def submit_task(body: AgentTask, runtime: Authed) -> TaskStatus:
    return await runtime.submit(body)


@router.get("/tasks/{task_id}")
async def get_task(task_id: str, runtime: Authed) -> TaskStatus:
    return runtime.task_status(task_id)


@router.get("/vms")
async def list_vms(runtime: Authed) -> list[VmReport]:
    return await runtime.vm_reports()


def _debug(runtime: HostRuntime) -> HostRuntime:
    if not runtime.fault_injection:
        raise Forbidden("fault injection is disabled on this agent")
    return runtime


@router.get("/debug/faults")
async def get_faults(runtime: Authed) -> Faults:
    return Faults(pending=_debug(runtime).faults.pending())


@router.post("/debug/faults")
async def add_fault(body: FaultRequest, runtime: Authed) -> Faults:
    faults = _debug(runtime).faults
    message = body.message or f"injected failure of {body.op}"
    error = None
    if body.code is not None:
        error = CorralError.from_body(
            ErrorBody(code=body.code, message=message, context={"op": body.op})
        )
    faults.fail_next(body.op, error, times=body.times)
    return Faults(pending=faults.pending())


@router.delete("/debug/faults")
async def clear_faults(runtime: Authed) -> Faults:
    faults = _debug(runtime).faults
    faults.clear()
    return Faults(pending=faults.pending())
