"""The one place errors become HTTP responses."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from corral.api.errors import CorralError, ErrorBody, ErrorResponse

log = logging.getLogger("corral.http")


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


def install(app: FastAPI) -> None:
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
            401: "unauthenticated",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
        }
        body = ErrorBody(code=code.get(exc.status_code, "http_error"), message=str(exc.detail))
        return _json(exc.status_code, body)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json(
            500, ErrorBody(code="internal", message=f"internal error: {type(exc).__name__}")
        )
