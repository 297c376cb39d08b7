"""``POST /v1/tasks`` served without FastAPI's routing and dependency solving.

Every VM operation sends the agent one request per step, and with many simulated hosts (or
``corral up``, where server and agent share one process) FastAPI's route matching, dependency
solving and response validation cost more than the task itself. ``serve_task`` answers this one
route the way the FastAPI route does (``routes.submit_task``): the bearer is checked first
(``401``), then the body (``422 invalid_input`` with FastAPI's error list), then the task is
submitted and its ``TaskStatus`` returned (``200``); a ``CorralError`` becomes its ``ErrorResponse``
(``errors.py``), anything else a ``500``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError

from corral.agent.runtime import HostRuntime
from corral.api.agent import AgentTask
from corral.api.errors import CorralError, ErrorResponse, InvalidInput
from corral.util.asgi import Receive, Send, header, read_body, send_json

log = logging.getLogger("corral.agent.http.errors")

TASKS_PATH = "/v1/tasks"
MAX_BODY = 16 * 1024 * 1024


class _Invalid(Exception):
    """The body is not a valid ``AgentTask``: ``errors`` as FastAPI lists them."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__("invalid request")
        self.errors = errors


def is_task_submit(scope: MutableMapping[str, Any], path: str) -> bool:
    """Whether a request (``path`` relative to the host's mount) is ``POST /v1/tasks``."""
    return scope.get("type") == "http" and scope.get("method") == "POST" and path == TASKS_PATH


async def serve_task(
    runtime: HostRuntime, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    """Answer ``POST /v1/tasks`` for ``runtime`` (see the module docstring)."""
    try:
        runtime.authenticate(header(scope, b"authorization"))
        body = await read_body(receive, MAX_BODY)
        try:
            task = AgentTask.model_validate(json.loads(body))
        except json.JSONDecodeError as exc:  # as FastAPI reports it
            errors: list[Any] = [{"type": "json_invalid", "loc": ("body", exc.pos),
                                  "msg": "JSON decode error", "input": {},
                                  "ctx": {"error": exc.msg}}]  # fmt: skip
            raise _Invalid(errors) from exc
        except ValidationError as exc:
            raise _Invalid(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from exc
        status = await runtime.submit(task)
    except _Invalid as exc:
        err = InvalidInput("invalid request", errors=jsonable_encoder(exc.errors))
        await _error(scope, send, err)
    except CorralError as exc:
        await _error(scope, send, exc)
    except ConnectionError:
        return  # the client went away
    except Exception as exc:
        log.error("POST %s crashed", scope.get("path"), exc_info=exc)
        await _error(scope, send, CorralError("unexpected error in the agent"), status=500)
    else:
        await send_json(send, 200, status.model_dump_json().encode())


async def _error(
    scope: MutableMapping[str, Any], send: Send, exc: CorralError, status: int | None = None
) -> None:
    if status is None:
        if exc.expected:
            log.info("POST %s -> %s", scope.get("path"), exc)
        else:
            log.error("POST %s -> %s", scope.get("path"), exc, exc_info=exc)
    body = ErrorResponse(error=exc.to_body()).model_dump_json().encode()
    await send_json(send, status or exc.http_status, body)
