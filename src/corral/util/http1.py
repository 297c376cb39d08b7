"""A small HTTP/1.1 client for the control plane's short JSON requests (keep-alive, TLS).

Server and agent exchange many small requests: tasks, heartbeats, events, callbacks (with 1,000
simulated hosts, 500 heartbeats a second). httpx spends ~10x more CPU per such request than the
request itself needs; this client does just what these calls use: one request per connection at a
time, a ``Content-Length`` body, responses with ``Content-Length``, chunked or read-to-close bodies,
a pool of idle connections per origin. Streaming and redirects are not supported (use httpx).

Errors: ``HttpError`` (an ``OSError``) for anything that prevents a response (connect, TLS, reset,
timeout, malformed answer). A request that finds its reused idle connection closed by the peer
before any byte of the answer is sent again once on a new connection (the peer closed the connection
without reading the request): callers must only send requests that are safe to repeat.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

IDLE_S = 4.0
"""Idle connections older than this are closed rather than reused (uvicorn drops them at 5 s)."""

_MAX_HEAD = 64 * 1024


class HttpError(OSError):
    """No (valid) response: connection, TLS, timeout or protocol failure."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float

    def close(self) -> None:
        self.writer.close()


class _Origin:
    def __init__(self, scheme: str, host: str, port: int, ctx: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port, self.ctx = scheme, host, port, ctx
        self.idle: list[_Conn] = []

    async def connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ctx, server_hostname=self.host if self.ctx else None
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(reader, writer, time.monotonic())

    def take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.idle_since < IDLE_S and not conn.reader.at_eof():
                return conn
            conn.close()
        return None


class Http1Client:
    """Connection pools per origin (scheme, host, port); ``ssl_for`` gives the TLS context of an
    https origin. Use from one event loop; ``aclose`` closes idle connections."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 200,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._slots = asyncio.Semaphore(max_connections)

    def _origin(self, scheme: str, host: str, port: int) -> _Origin:
        key = (scheme, host, port)
        origin = self._origins.get(key)
        if origin is None:
            ctx = None
            if scheme == "https":
                ctx = self.ssl_context or ssl.create_default_context()
            origin = self._origins[key] = _Origin(scheme, host, port, ctx)
        return origin

    async def aclose(self) -> None:
        for origin in self._origins.values():
            for conn in origin.idle:
                conn.close()
            origin.idle.clear()

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and read the whole response (any status); ``HttpError`` otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"unsupported URL {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = self._origin(parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(content)}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            async with self._slots, asyncio.timeout(timeout or self.timeout):
                return await self._send(origin, head + content, method, url)
        except TimeoutError as exc:
            raise HttpError(f"{method} {url}: timed out") from exc

    async def _send(self, origin: _Origin, data: bytes, method: str, url: str) -> Response:
        idle = origin.take_idle()
        for attempt in range(2):
            reused = idle is not None and attempt == 0
            conn = idle if reused and idle is not None else await self._connect(origin, url)
            try:
                conn.writer.write(data)
                await conn.writer.drain()
                status_line = await conn.reader.readline()
                if not status_line and reused:  # the peer closed the idle connection: retry
                    conn.close()
                    continue
                resp, keep = await _read_response(conn.reader, status_line, method, url)
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError) as exc:
                conn.close()
                if reused and isinstance(exc, ConnectionError):
                    continue
                raise HttpError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
            except BaseException:
                conn.close()  # cancelled mid-request: the connection state is unknown
                raise
            if keep:
                conn.idle_since = time.monotonic()
                origin.idle.append(conn)
            else:
                conn.close()
            return resp
        raise HttpError(f"{method} {url}: the connection was closed")  # pragma: no cover

    @staticmethod
    async def _connect(origin: _Origin, url: str) -> _Conn:
        try:
            return await origin.connect()
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"cannot connect to {url}: {exc}") from exc


async def _read_response(
    reader: asyncio.StreamReader, status_line: bytes, method: str, url: str
) -> tuple[Response, bool]:
    """Parse one response; returns it and whether the connection can be reused."""
    version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(rest.partition(" ")[0])
    headers: dict[str, str] = {}
    size = 0
    while True:
        line = await reader.readline()
        size += len(line)
        if size > _MAX_HEAD or not line:
            raise ValueError("response head too large or truncated")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        body, keep = await reader.read(), False
    return Response(status, headers, body, url), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
