"""A fake Corral server (FastAPI on a real port) that records what agents send it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from corral.api.agent import Heartbeat, ImageRef, TaskStatus, VmEvents

IMAGE_BYTES = b"corral-test-image\n" * 1000


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class FakeServer:
    """Records heartbeats, callbacks and events (with arrival times); serves one image."""

    url: str = ""
    heartbeats: list[tuple[float, Heartbeat]] = field(default_factory=list)
    callbacks: list[tuple[float, TaskStatus]] = field(default_factory=list)
    events: list[tuple[float, VmEvents]] = field(default_factory=list)
    auth: set[str] = field(default_factory=set)
    fail_callbacks: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> FastAPI:
        app = FastAPI()
        loop = asyncio.get_running_loop()

        def record(request: Request) -> float:
            self.auth.add(request.headers.get("authorization", ""))
            self._changed.set()
            return loop.time()

        @app.post("/api/v1/agent/heartbeat")
        async def heartbeat(request: Request) -> dict[str, str]:
            self.heartbeats.append(
                (record(request), Heartbeat.model_validate(await request.json()))
            )
            return {}

        @app.post("/api/v1/agent/tasks/{task_id}")
        async def callback(request: Request, task_id: str) -> Response:
            if self.fail_callbacks > 0:
                self.fail_callbacks -= 1
                return Response(status_code=503)
            status = TaskStatus.model_validate(await request.json())
            assert status.task_id == task_id
            self.callbacks.append((record(request), status))
            return Response(status_code=204)

        @app.post("/api/v1/agent/events")
        async def events(request: Request) -> dict[str, str]:
            self.events.append((record(request), VmEvents.model_validate(await request.json())))
            return {}

        @app.get("/api/v1/agent/images/{image_id}/data")
        async def image(request: Request, image_id: str) -> Response:
            record(request)
            return Response(IMAGE_BYTES, media_type="application/octet-stream")

        return app

    async def wait(self, predicate: Callable[[], bool], timeout: float = 5.0) -> float:
        """Wait until ``predicate()`` holds; return the loop time when it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError("timed out waiting for the fake server")
            waiter = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait({waiter}, timeout=remaining)
            waiter.cancel()
        return loop.time()


def image_ref() -> ImageRef:
    return ImageRef(
        id="img-1",
        sha256=hashlib.sha256(IMAGE_BYTES).hexdigest(),
        size_bytes=len(IMAGE_BYTES),
        virtual_size_bytes=len(IMAGE_BYTES),
        format="raw",
        download_path="/api/v1/agent/images/img-1/data",
    )


@contextlib.asynccontextmanager
async def serve_fake(
    server: FakeServer, *, certfile: Path | None = None, keyfile: Path | None = None
) -> AsyncIterator[FakeServer]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(
        server.app(),
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    uv = _QuietServer(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    scheme = "https" if certfile is not None else "http"
    server.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield server
    finally:
        uv.should_exit = True
        await task


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    async with serve_fake(FakeServer()) as server:
        yield server
