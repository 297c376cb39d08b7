"""Run uvicorn inside an existing asyncio loop (several listeners per process, no signal capture)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Listener:
    """A running HTTP(S) listener. ``port`` is the real port (useful when 0 was asked)."""

    server: EmbeddedServer
    task: asyncio.Task[None]
    port: int

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self.task


async def start_listener(
    app: Any,
    *,
    host: str,
    port: int,
    cert: Path | None = None,
    key: Path | None = None,
    log_level: str = "warning",
) -> Listener:
    """Serve ``app`` on ``host:port`` (0 = a free port); returns once the socket accepts."""
    kwargs: dict[str, Any] = {}
    if cert is not None and key is not None:
        kwargs = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    # uvicorn sets TCP_NODELAY only on sockets it binds itself; without it keep-alive requests stall
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        lifespan="off",
        access_log=False,
        http="httptools",
        # X-Forwarded-For is believed only behind a configured proxy (audit log, rate limits)
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        **kwargs,
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http-{port}")
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn only has a flag)
        await asyncio.sleep(0.01)
    if task.done():
        sock.close()
        task.result()
        raise OSError(f"cannot serve on {host}:{port}")
    return Listener(server=server, task=task, port=int(sock.getsockname()[1]))
