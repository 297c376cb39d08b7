"""The one mapping from errors to HTTP responses: every non-2xx body is an ``ErrorResponse``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.api.errors import CorralError, ErrorBody, ErrorResponse, InvalidInput

log = logging.getLogger(__name__)

_HTTP_CODES = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 409: "conflict"}


def _response(status: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=body).model_dump(mode="json"), status_code=status)


async def _corral_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CorralError)
    if exc.expected:
        log.info("%s %s -> %s", request.method, request.url.path, exc)
    else:
        log.error("%s %s -> %s", request.method, request.url.path, exc, exc_info=exc)
    return _response(exc.http_status, exc.to_body())


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = InvalidInput("invalid request", errors=jsonable_encoder(exc.errors()))
    return await _corral_error(request, err)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(
        exc.status_code, "invalid_input" if exc.status_code < 500 else "internal"
    )
    return _response(exc.status_code, ErrorBody(code=code, message=str(exc.detail)))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s crashed", request.method, request.url.path, exc_info=exc)
    return _response(500, CorralError("unexpected error in the agent").to_body())


def install_error_handlers(app: FastAPI) -> None:
    """Map ``CorralError`` (by its ``http_status``), validation and routing errors, and crashes."""
    app.add_exception_handler(CorralError, _corral_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
