"""A whole Corral over TLS (server, simulated hosts) in the test's loop, and a pinned API client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from corral.up import Stack, start_stack
from corral.util.tls import leaf_pem, pinned_context
from tests.support.stack import ADMIN_PASSWORD


@asynccontextmanager
async def tls_stack(
    data_dir: Path,
    *,
    sim_hosts: int = 2,
    server: dict[str, Any] | None = None,
    ports: tuple[int, int] = (0, 0),
) -> AsyncIterator[Stack]:
    """``corral up --driver simulator`` over HTTPS on loopback (server and agent ``ports``,
    0: free ones)."""
    stack = await start_stack(
        data_dir=data_dir,
        port=ports[0],
        agent_port=ports[1],
        host="127.0.0.1",
        tls=True,
        driver="simulator",
        sim_hosts=sim_hosts,
        agent_overrides={"heartbeat_interval": 0.3},
        server_overrides={"admin_password": ADMIN_PASSWORD, **(server or {})},
    )
    try:
        yield stack
    finally:
        await stack.stop()


@asynccontextmanager
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on ``/api/v1`` that pins the server's certificate, logged in as admin."""
    verify = pinned_context(leaf_pem(stack.server.settings.cert_path.read_text()))
    async with httpx.AsyncClient(
        base_url=f"{stack.server.url}/api/v1", verify=verify, timeout=30
    ) as c:
        r = await c.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
