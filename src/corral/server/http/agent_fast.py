"""The routes agents call many times a second, served without FastAPI's routing and dependencies.

``POST /api/v1/agent/heartbeat``, ``/api/v1/agent/events`` and ``/api/v1/agent/tasks/{task_id}``:
with 1,000 hosts, heartbeats alone are 500 requests/s, and FastAPI's route matching and dependency
solving cost more than the work itself. ``AgentFastPath`` is a pure ASGI middleware in front of the
router: it answers these three paths itself (same auth, same validation, same error bodies as every
other route) and passes everything else on.

Contract of each route (Bearer = the host's agent token):
- ``heartbeat``: body ``Heartbeat``; ``{"status": "ok"}``; ``422 invalid_input`` if ``host_id`` is
  not the caller's host.
- ``events``: body ``VmEvents``; ``{"received": n}``.
- ``tasks/{task_id}``: body ``TaskStatus``; ``{"delivered": bool}`` (false: nobody waits for it).
Errors: ``401 unauthenticated`` (no or unknown token), ``422 invalid_input`` (body), ``405``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from corral.api.agent import Heartbeat, TaskStatus, VmEvents
from corral.api.errors import CorralError, ErrorBody, ErrorResponse, InvalidInput, Unauthenticated
from corral.server.db.tables import HostRow
from corral.server.http.errors import validation_body
from corral.server.services import hosts
from corral.server.services.context import Services
from corral.util.asgi import Asgi, Receive, Scope, Send, bearer, read_body, send_json

log = logging.getLogger("corral.http")

PREFIX = "/api/v1/agent/"
MAX_BODY = 16 * 1024 * 1024


async def _heartbeat(svc: Services, host: HostRow, body: bytes, _: str) -> dict[str, Any]:
    beat = Heartbeat.model_validate_json(body)
    if beat.host_id != host.id:
        raise InvalidInput("heartbeat for another host", host_id=beat.host_id)
    await hosts.record_heartbeat(svc=svc, host=host, beat=beat)
    return {"status": "ok"}


async def _events(svc: Services, host: HostRow, body: bytes, _: str) -> dict[str, Any]:
    batch = VmEvents.model_validate_json(body)
    await hosts.record_events(svc=svc, host=host, events=batch.events)
    return {"received": len(batch.events)}


async def _task(svc: Services, host: HostRow, body: bytes, _: str) -> dict[str, Any]:
    status = TaskStatus.model_validate_json(body)
    return {"delivered": svc.agents.deliver(status)}


Handler = Callable[[Services, HostRow, bytes, str], Awaitable[dict[str, Any]]]


def _route(path: str) -> tuple[Handler, str] | None:
    rest = path[len(PREFIX) :]
    if rest == "heartbeat":
        return _heartbeat, ""
    if rest == "events":
        return _events, ""
    if rest.startswith("tasks/") and "/" not in rest[6:] and rest[6:]:
        return _task, rest[6:]
    return None


def _token(scope: Scope) -> str:
    token = bearer(scope)
    if token is None:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'; log in first")
    return token


async def _respond(send: Send, status: int, payload: dict[str, Any] | BaseModel) -> None:
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json().encode()
    else:
        body = json.dumps(payload, separators=(",", ":")).encode()
    await send_json(send, status, body)


class AgentFastPath:
    """ASGI middleware: serves the agent routes of the module docstring, passes the rest on."""

    def __init__(self, app: Asgi, services: Callable[[], Services | None]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        route = _route(path) if scope["type"] == "http" and path.startswith(PREFIX) else None
        svc = self.services() if route is not None else None
        if route is None or svc is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            body = ErrorBody(code="method_not_allowed", message="Method Not Allowed")
            await _respond(send, 405, ErrorResponse(error=body))
            return
        handler, arg = route
        try:
            token = _token(scope)
            try:
                host = await hosts.host_by_token(svc=svc, token=token)
            except CorralError as exc:
                raise Unauthenticated("unknown agent token") from exc
            result = await handler(svc, host, await read_body(receive, MAX_BODY), arg)
        except ValidationError as exc:
            await _respond(send, 422, ErrorResponse(error=validation_body(exc.errors())))
        except CorralError as exc:
            level = logging.INFO if exc.expected else logging.ERROR
            log.log(level, "POST %s -> %s", path, exc, exc_info=None if exc.expected else exc)
            await _respond(send, exc.http_status, ErrorResponse(error=exc.to_body()))
        except ConnectionError:
            return
        except Exception as exc:
            log.exception("unhandled error on POST %s", path, exc_info=exc)
            body = ErrorBody(code="internal", message=f"internal error: {type(exc).__name__}")
            await _respond(send, 500, ErrorResponse(error=body))
        else:
            await _respond(send, 200, result)
