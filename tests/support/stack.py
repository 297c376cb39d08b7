"""Start a whole Corral (server + agent) in the test's event loop, talking real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from corral.up import Stack, start_stack

ADMIN_PASSWORD = "test-admin-password"


@asynccontextmanager
async def running_stack(
    data_dir: Path,
    *,
    driver: str = "simulator",
    sim_hosts: int = 1,
    database_url: str | None = None,
    agent_overrides: dict[str, Any] | None = None,
    fault_injection: bool = True,
    server_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    stack = await start_stack(
        data_dir=data_dir,
        port=0,
        agent_port=0,
        host="127.0.0.1",
        tls=False,
        driver=driver,  # type: ignore[arg-type]
        sim_hosts=sim_hosts,
        agent_overrides={"fault_injection": fault_injection, **(agent_overrides or {})},
        server_overrides={
            "database_url": database_url,
            "admin_password": ADMIN_PASSWORD,
            "fault_injection": fault_injection,
            **(server_overrides or {}),
        },
    )
    try:
        yield stack
    finally:
        await stack.stop()


@asynccontextmanager
async def api_client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the stack's REST API, logged in as admin."""
    async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1", timeout=60) as c:
        r = await c.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c


async def wait_op(c: httpx.AsyncClient, op: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    r = await c.get(f"/operations/{op['id']}", params={"wait": timeout})
    r.raise_for_status()
    done: dict[str, Any] = r.json()
    return done


async def upload_image(c: httpx.AsyncClient, name: str, path: Path) -> dict[str, Any]:
    r = await c.post("/images", json={"name": name})
    r.raise_for_status()
    image_id = r.json()["target_id"]
    r = await c.put(f"/images/{image_id}/data", content=path.read_bytes())
    r.raise_for_status()
    return (await c.get(f"/images/{image_id}")).json()  # type: ignore[no-any-return]


async def pool_reached(c: httpx.AsyncClient, pool: str, hosts: int, timeout: float = 10) -> None:
    """Wait until ``hosts`` agents report the storage pool usable (pool syncs are
    asynchronous: until then placement finds no host that reaches it)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if (await c.get(f"/storage-pools/{pool}")).json()["hosts"]["ok"] >= hosts:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pool {pool} not reached by {hosts} hosts in {timeout} s")
