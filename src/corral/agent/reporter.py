"""The agent's HTTP client to its server: heartbeats, events, task callbacks, image downloads and
uploads (captured images).

Every request carries ``Authorization: Bearer <host token>`` and, for ``https`` servers, trusts
exactly the pinned server certificate given at attach (the system CAs when none was given).
Failures are translated once here: ``AgentUnreachable`` when the server cannot be reached, the
server's own error (rebuilt from its ``ErrorResponse``) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from pydantic import BaseModel, ValidationError

from corral.agent.attach import Attachment
from corral.api.agent import ImageRef, TaskStatus
from corral.api.errors import (
    AgentUnreachable,
    CorralError,
    ErrorBody,
    ErrorResponse,
    StorageError,
)
from corral.util.http1 import Http1Client, HttpError
from corral.util.tls import pinned_context

log = logging.getLogger(__name__)

CALLBACK_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Pauses between the attempts of a task callback (so 5 attempts in ~7.5 s)."""

_CHUNK = 1024 * 1024
_UPLOAD_CHUNK = 4 * 1024 * 1024


class ServerLink:
    """A connection pool to one server, for one attachment. Replace it when the attachment changes."""

    def __init__(self, attachment: Attachment, *, name: str, timeout: float = 10.0) -> None:
        self.attachment = attachment
        self.name = name
        self.timeout = timeout
        # Plain http needs no context (loading the system CAs costs ~40 ms per client).
        self._verify: ssl.SSLContext | bool = attachment.server_url.startswith("https")
        if self._verify and attachment.server_cert_pem:
            self._verify = pinned_context(attachment.server_cert_pem)
        auth = {"Authorization": f"Bearer {attachment.token}"}
        # Small JSON requests (heartbeats, events, callbacks) go through the light client;
        # httpx is only created for image downloads (streaming).
        self._http = Http1Client(
            ssl_context=self._verify if isinstance(self._verify, ssl.SSLContext) else None,
            max_connections=20,
            timeout=timeout,
            headers=auth,
        )
        self._client: httpx.AsyncClient | None = None
        self._down = False

    def _downloads(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.attachment.server_url,
                headers={"Authorization": f"Bearer {self.attachment.token}"},
                verify=self._verify,
                timeout=self.timeout,
            )
        return self._client

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._client is not None:
            await self._client.aclose()

    def url(self, path_or_url: str) -> str:
        """An absolute URL for a server path (``/api/...``) or an absolute URL unchanged."""
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.attachment.server_url + "/" + path_or_url.lstrip("/")

    async def post(
        self, path_or_url: str, body: BaseModel, *, timeout: float | None = None
    ) -> None:
        """POST a model as JSON; raise ``AgentUnreachable`` or the server's error."""
        url = self.url(path_or_url)
        try:
            resp = await self._http.request(
                "POST",
                url,
                content=body.model_dump_json().encode(),
                headers={"Content-Type": "application/json"},
                timeout=timeout,
            )
        except HttpError as exc:
            cause = exc.__cause__ or exc
            raise AgentUnreachable(
                "server unreachable", url=url, reason=type(cause).__name__
            ) from exc
        _raise_for_error(resp.status, resp.content, resp.url)

    def reachable(self, ok: bool, exc: CorralError | None = None) -> None:
        """Log server outages once: a warning when it goes down, info when it is back."""
        if ok and self._down:
            log.info("%s: reports to server %s work again", self.name, self.attachment.server_url)
        elif not ok and not self._down:
            log.warning(
                "%s: reports to server %s fail: %s", self.name, self.attachment.server_url, exc
            )
        self._down = not ok

    async def task_done(self, status: TaskStatus, callback_url: str) -> None:
        """Deliver a final task status, retrying (with back-off) on network errors and 5xx.
        Gives up after ``len(CALLBACK_DELAYS) + 1`` attempts; never raises."""
        for attempt, delay in enumerate((*CALLBACK_DELAYS, None), start=1):
            try:
                await self.post(callback_url, status)
                return
            except CorralError as exc:
                status_code = getattr(exc, "remote_status", exc.http_status)
                retry = isinstance(exc, AgentUnreachable) or status_code >= 500
                if delay is None or not retry:
                    log.warning(
                        "%s: callback of task %s failed (attempt %d): %s",
                        self.name,
                        status.task_id,
                        attempt,
                        exc,
                    )
                    return
                await asyncio.sleep(delay)

    async def download(self, image: ImageRef, dest: Path) -> None:
        """Stream the image's bytes to ``dest`` (``image.download_path`` on the server).
        Raises ``AgentUnreachable``, the server's error, or ``StorageError`` for local I/O."""
        url = self.url(image.download_path)
        try:
            await self._download(url, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                dest.unlink(missing_ok=True)  # noqa: ASYNC240 (one quick unlink on failure)
            raise

    async def _download(self, url: str, dest: Path) -> None:
        try:
            async with self._downloads().stream(
                "GET", url, timeout=httpx.Timeout(60.0, connect=10.0)
            ) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _raise_for_error(resp.status_code, resp.content, str(resp.url))
                with dest.open("wb") as f:
                    async for chunk in resp.aiter_bytes(_CHUNK):
                        await asyncio.to_thread(f.write, chunk)
        except httpx.HTTPError as exc:
            raise AgentUnreachable(
                "image download failed", url=url, reason=type(exc).__name__
            ) from exc
        except OSError as exc:
            raise StorageError(
                "cannot write the image", path=str(dest), reason=exc.strerror
            ) from exc

    async def upload(self, path_or_url: str, source: Path) -> tuple[int, str]:
        """Stream the file ``source`` to the server with ``PUT`` (a captured image's bytes);
        returns the size and SHA-256 (hex) of the bytes sent, hashed as they are read. Raises
        ``AgentUnreachable``, the server's error, or ``StorageError`` for local I/O."""
        url = self.url(path_or_url)
        digest = hashlib.sha256()
        sent = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal sent
            with source.open("rb") as f:
                while chunk := await asyncio.to_thread(_read_and_hash, f, digest):
                    sent += len(chunk)
                    yield chunk

        try:
            resp = await self._downloads().put(
                url,
                content=chunks(),
                headers={"Content-Type": "application/octet-stream"},
                timeout=httpx.Timeout(600.0, connect=10.0),
            )
        except httpx.HTTPError as exc:
            raise AgentUnreachable(
                "image upload failed", url=url, reason=type(exc).__name__
            ) from exc
        except OSError as exc:
            raise StorageError(
                "cannot read the image", path=str(source), reason=exc.strerror
            ) from exc
        _raise_for_error(resp.status_code, resp.content, str(resp.url))
        return sent, digest.hexdigest()


def _read_and_hash(f: BinaryIO, digest: Any) -> bytes:
    chunk = f.read(_UPLOAD_CHUNK)
    digest.update(chunk)
    return chunk


def _raise_for_error(status: int, content: bytes, url: str) -> None:
    if status < 400:
        return
    try:
        body = ErrorResponse.model_validate_json(content).error
    except ValidationError:
        body = ErrorBody(
            code="internal",
            message="server answered with an error",
            context={"status": status, "url": url},
        )
    raise CorralError.from_body(body, status)
