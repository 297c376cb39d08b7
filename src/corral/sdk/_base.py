"""I/O-free pieces shared by the sync and async clients: errors, TLS, queries, files."""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from corral.api.common import Page
from corral.api.errors import (
    Conflict,
    CorralError,
    ErrorBody,
    ErrorResponse,
    Forbidden,
    InvalidInput,
    NotFound,
    Timeout,
    Unauthenticated,
)

M = TypeVar("M", bound=BaseModel)

API_PREFIX = "/api/v1"
CHUNK_SIZE = 1024 * 1024
POLL_CHUNK = 10.0
"""Seconds one ``?wait=`` long poll asks for when nobody watches the progress."""
PROGRESS_POLL_CHUNK = 1.0
"""Seconds one long poll asks for when an ``on_progress`` callback wants frequent updates."""

ProgressCallback = Callable[[int, int], object]
"""Called with ``(bytes_done, bytes_total)`` while a file is transferred."""

_STATUS_ERRORS: dict[int, type[CorralError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
    504: Timeout,
}


def error_from_response(response: httpx.Response) -> CorralError:
    """The ``CorralError`` subclass a non-2xx response stands for.

    A well-formed ``ErrorResponse`` body is rebuilt with ``CorralError.from_body``; anything else (a
    proxy's HTML page, a framework's default 404) is mapped from the HTTP status.
    """
    try:
        body = ErrorResponse.model_validate_json(response.content).error
    except ValidationError:
        cls = _STATUS_ERRORS.get(response.status_code, CorralError)
        text = response.text.strip()[:200] or response.reason_phrase
        body = ErrorBody(
            code=cls.code,
            message=f"HTTP {response.status_code}: {text}",
            context={"url": str(response.request.url)},
        )
    return CorralError.from_body(body, response.status_code)


def error_from_transport(exc: httpx.HTTPError, url: str) -> CorralError:
    """Translate an httpx failure that produced no response (timeout, refused, TLS)."""
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(f"no answer from the Corral server at {url} in time", url=url)
    return CorralError(f"cannot reach the Corral server at {url}: {exc}", url=url)


def build(model: type[M], /, **fields: Any) -> M:
    """Validate a request model on the client side; raise ``InvalidInput`` on bad values."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]) + ": " if err["loc"] else "")
            + err["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own
            for err in exc.errors()
        ]
        raise InvalidInput("; ".join(problems), errors=problems) from exc


def tls_verify(verify: bool | str | ssl.SSLContext) -> bool | ssl.SSLContext:
    """What httpx's ``verify=`` gets.

    ``True`` uses the system CAs, ``False`` checks nothing, a string is the path of a PEM file with
    the CA certificates (or the server's own self-signed certificate) to trust, host names checked.
    To trust exactly one certificate whatever the host name, pass ``tls.pinned_context(pem)``.
    """
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"cannot load CA file {verify}: {exc}", path=verify) from exc
    return verify


def quote_ref(ref: str) -> str:
    """A resource reference (id or name) safe to put in a URL path."""
    if not ref:
        raise InvalidInput("empty resource reference")
    return quote(ref, safe="")


Params = Mapping[str, str | list[str]]
"""Query parameters of a request: a list repeats the parameter (``tag=a&tag=b``)."""


def query(
    filters: Mapping[str, object],
    *,
    limit: int,
    offset: int,
    sort: str | None,
    q: str | None = None,
    tag: str | Sequence[str] | None = None,
    fields: Sequence[str] | None = None,
    count: bool = False,
) -> dict[str, str | list[str]]:
    """Query parameters of a list call (the server's Query API): ``q`` conditions, ``sort``,
    ``tag`` (one or several: all must match), selected ``fields``, ``count`` only, and
    ``field=value`` filters; ``None`` values are left out."""
    params: dict[str, str | list[str]] = {"limit": str(limit), "offset": str(offset)}
    if sort is not None:
        params["sort"] = sort
    if q:
        params["q"] = q
    if tag:
        params["tag"] = [tag] if isinstance(tag, str) else list(tag)
    if fields:
        params["fields"] = ",".join(fields)
    if count:
        params["count"] = "true"
    for key, value in filters.items():
        if value is None:
            continue
        if isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, Enum):
            params[key] = str(value.value)
        else:
            params[key] = str(value)
    return params


def wait_param(seconds: float) -> str:
    """The ``?wait=`` value for a long poll of ``seconds``."""
    return f"{max(seconds, 0.0):.3f}".rstrip("0").rstrip(".") or "0"


@functools.cache
def _page_class(model: type[BaseModel]) -> type[Page[Any]]:
    return Page[model]  # type: ignore[valid-type]


def parse_page(model: type[M], content: bytes) -> Page[M]:
    """Parse a ``Page[model]`` response body."""
    page: Page[M] = _page_class(model).model_validate_json(content)
    return page


def parse(model: type[M], content: bytes) -> M:
    """Parse a response body; a body that does not match the contract is an internal error."""
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        raise CorralError(
            f"the server answered with an unexpected {model.__name__}: {exc.error_count()} errors"
        ) from exc


def monotonic() -> float:
    """The clock deadlines are measured with."""
    return time.monotonic()


def sync_sleep(seconds: float) -> None:
    """Sleep (sync twin of ``async_sleep``)."""
    time.sleep(seconds)


async def async_sleep(seconds: float) -> None:
    """Sleep without blocking the event loop."""
    await asyncio.sleep(seconds)


class UploadSource:
    """A local file sent as a streamed request body, reporting progress per chunk."""

    def __init__(self, path: str | Path, progress: ProgressCallback | None = None) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except OSError as exc:
            raise InvalidInput(f"cannot read {self.path}: {exc.strerror}", path=str(path)) from exc
        self._progress = progress

    def _open(self) -> IO[bytes]:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise InvalidInput(
                f"cannot read {self.path}: {exc.strerror}", path=str(self.path)
            ) from exc

    def sync_chunks(self) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk (progress reported as each chunk is handed over)."""
        sent = 0
        with self._open() as f:
            while chunk := f.read(CHUNK_SIZE):
                sent += len(chunk)
                yield chunk
                if self._progress is not None:
                    self._progress(sent, self.size)

    async def async_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk, read in a worker thread."""
        sent = 0
        f = self._open()
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE):
                sent += len(chunk)
                yield chunk
                if self._progress is not None:
                    self._progress(sent, self.size)
        finally:
            f.close()

    def headers(self) -> dict[str, str]:
        """Headers of the upload: a known length, so the server can check it got everything."""
        return {"Content-Type": "application/octet-stream", "Content-Length": str(self.size)}


class DownloadSink:
    """A local file a streamed response body is written to, reporting progress per chunk."""

    def __init__(self, path: str | Path, progress: ProgressCallback | None = None) -> None:
        self.path = Path(path)
        self._progress = progress
        self._file: IO[bytes] | None = None
        self.written = 0
        self.total = 0

    def start(self, total: int) -> None:
        """Open (truncate) the file; ``total`` is the expected size, 0 if unknown."""
        self.total = total
        try:
            self._file = self.path.open("wb")
        except OSError as exc:
            raise InvalidInput(
                f"cannot write {self.path}: {exc.strerror}", path=str(self.path)
            ) from exc

    def sync_write(self, chunk: bytes) -> None:
        """Append one chunk."""
        assert self._file is not None
        self._file.write(chunk)
        self.written += len(chunk)
        if self._progress is not None:
            self._progress(self.written, self.total)

    async def async_write(self, chunk: bytes) -> None:
        """Append one chunk from a worker thread."""
        await asyncio.to_thread(self.sync_write, chunk)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
