"""The one place errors become HTTP responses."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from corral.api.errors import CorralError, ErrorBody, ErrorResponse

log = logging.getLogger("corral.http")

_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_REF}}
ERROR_RESPONSES: dict[str, dict[str, Any]] = {
    "422": {
        "description": "invalid_input: the request is malformed; `context.errors` lists each "
        "invalid field",
        "content": _ERROR_CONTENT,
    },
    "4XX": {
        "description": "The request was refused; `error.code` says why (unauthenticated, "
        "forbidden, not_found, conflict, name_taken, invalid_state, precondition_failed, "
        "rate_limited, …)",
        "content": _ERROR_CONTENT,
    },
    "5XX": {
        "description": "The server or an agent failed; `error.code` says what (internal, "
        "agent_unreachable, agent_error, timeout, …)",
        "content": _ERROR_CONTENT,
    },
}
"""The error answers every operation documents: all of them carry an ``ErrorResponse``."""


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document ``spec`` tell the truth about errors (in place; idempotent):
    every operation answers ``ERROR_RESPONSES`` with an ``ErrorResponse`` body, in place of
    FastAPI's ``HTTPValidationError`` (which this app never sends: see ``install``)."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    model = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(model.pop("$defs", {}))
    schemas["ErrorResponse"] = model
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.update(ERROR_RESPONSES)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def _json(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=ErrorResponse(error=body).model_dump(mode="json")
    )


def validation_body(raw: Sequence[Any]) -> ErrorBody:
    """``invalid_input`` naming the first invalid field, every error in ``context.errors``
    (``raw``: pydantic's ``errors()``)."""
    errors = [
        {"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in raw
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid input"}
    where = ".".join(str(p) for p in first["loc"] if p != "body")
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return ErrorBody(code="invalid_input", message=message, context={"errors": errors})


def allowed_methods(spec: dict[str, Any], path: str) -> list[str]:
    """The methods the OpenAPI document ``spec`` lists for ``path`` (plus HEAD where GET is),
    for the ``Allow`` header of a 405: Starlette's own names only the methods of the first
    route that matches the path, and GET /zones and POST /zones are two routes. A literal path
    (``/users/me``) is its own resource, not an instance of a template (``/users/{ref}``)."""
    paths: dict[str, Any] = spec.get("paths", {})
    if path in paths:
        methods = {m.upper() for m in paths[path]}
    else:
        methods = set()
        for template, item in paths.items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path):
                methods.update(m.upper() for m in item)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into an ``ErrorResponse`` with the error's
    status, and document those answers in the app's OpenAPI (``document_errors``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> JSONResponse:
        if exc.expected:
            log.info("%s %s -> %s", request.method, request.url.path, exc)
        else:
            log.error("%s %s -> %s", request.method, request.url.path, exc, exc_info=exc)
        response = _json(exc.http_status, exc.to_body())
        retry = exc.context.get("retry_after_s")
        if exc.http_status == 429 and isinstance(retry, int | float):
            response.headers["Retry-After"] = str(max(1, math.ceil(retry)))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(422, validation_body(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {
            400: "invalid_input",  # a body that cannot be parsed (e.g. not UTF-8)
            401: "unauthenticated",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }
        body = ErrorBody(code=code.get(exc.status_code, "http_error"), message=str(exc.detail))
        response = _json(exc.status_code, body)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: Allow lists every method of the path
            allowed = allowed_methods(request.app.openapi(), request.url.path)
            response.headers["Allow"] = ", ".join(allowed)
        return response

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json(
            500, ErrorBody(code="internal", message=f"internal error: {type(exc).__name__}")
        )
