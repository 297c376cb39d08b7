"""Request latency of one API call with token auth, AccessKey signing and no auth (same route,
same server, same run).

A server runs in this process (plain HTTP on loopback). The call is ``GET /api/v1/vms?limit=10``
over 50 VMs' worth of rows. Baseline "no auth": the same route handler mounted a second time
without the auth dependency, with a fixed platform-admin caller, so the difference is exactly
what authentication and loading the caller's rights cost. The AccessKey figure includes signing
the request on the client (HMAC, ~30 µs) as a program would. The three calls are interleaved one
by one, in rotating order (the machine's load drifts: blocks of calls would measure the drift);
p50s.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench.common import BenchContext, Figure, median
from corral.api.common import Page
from corral.api.signing import signed_headers
from corral.api.vms import Vm
from corral.server.http.deps import Listing
from corral.util.http1 import Http1Client

NAME = "auth"
TARGET = "auth adds <= 10% at p50"
PATH = "/api/v1/vms"
QUERY = "limit=10"


async def _seed(svc: object, n: int) -> None:
    from corral.server.db.tables import VmRow

    now = datetime.now(UTC)
    async with svc.sessionmaker.begin() as s:  # type: ignore[attr-defined]
        project = await _default_project(s)
        for i in range(n):
            s.add(VmRow(id=uuid.uuid4().hex, name=f"vm-{i}", status="running",
                        power_state="running", cpus=1, memory_mb=64, disk_gb=1, claimed=False,
                        vnc_password="x", project_id=project, created_at=now,
                        updated_at=now))  # fmt: skip


async def _default_project(s: object) -> str:
    from sqlalchemy import select

    from corral.server.db.tables import ProjectRow

    pid = await s.scalar(select(ProjectRow.id).limit(1))  # type: ignore[attr-defined]
    assert isinstance(pid, str)
    return pid


async def _once(
    http: Http1Client, url: str, headers: dict[str, str] | None, key: tuple[str, str] | None
) -> float:
    """Seconds one ``GET`` takes (``key``: signed on the client first, inside the timing)."""
    path = TWIN if headers is None and key is None else PATH
    t0 = time.perf_counter()
    if key is not None:
        headers = signed_headers(key[0], key[1], "GET", PATH, QUERY, b"")
    r = await http.request("GET", f"{url}{path}?{QUERY}", headers=headers)
    elapsed = time.perf_counter() - t0
    if r.status != 200:
        raise RuntimeError(f"GET {path}: {r.status} {r.text[:200]}")
    return elapsed


async def run(ctx: BenchContext) -> list[Figure]:
    from corral.server.app import start
    from corral.server.settings import ServerSettings

    n = 60 if ctx.quick else 400
    rounds = 2 if ctx.quick else 5
    password = "bench-admin-password-123"
    server = await start(ServerSettings(data_dir=ctx.workdir / "server", host="127.0.0.1",
                                        port=0, tls=False, admin_password=password))  # fmt: skip
    http = Http1Client(timeout=30)
    try:
        url = server.url
        await _seed(server.services, 50)
        body = json.dumps({"username": "admin", "password": password}).encode()
        r = await http.request("POST", f"{url}/api/v1/auth/login", content=body,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        token = json.loads(r.content)["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        r = await http.request("POST", f"{url}/api/v1/access-keys", content=b"{}",
                               headers={**bearer, "Content-Type": "application/json"})  # fmt: skip
        created = json.loads(r.content)
        key = (created["id"], created["secret"])
        admin = await current_caller_of(server, token)
        none_s: list[float] = []
        token_s: list[float] = []
        key_s: list[float] = []
        _add_unauthenticated_twin(server, admin)
        variants = [(none_s, None, None), (token_s, bearer, None), (key_s, None, key)]
        for _ in range(20):  # warm-up
            for _, headers, signing in variants:
                await _once(http, url, headers, signing)
        for i in range(rounds * n):  # interleaved, order rotating: a load change hits all three
            for out, headers, signing in variants[i % 3 :] + variants[: i % 3]:
                out.append(await _once(http, url, headers, signing))
    finally:
        await http.aclose()
        await server.stop()
    label = "same route, no auth"
    return [
        Figure("auth.token_p50", median(token_s), "s", TARGET, median(none_s), label),
        Figure("auth.access_key_p50", median(key_s), "s", TARGET, median(none_s), label,
               note="includes signing on the client"),
    ]  # fmt: skip


TWIN = "/bench/vms"


def _add_unauthenticated_twin(server: Any, caller: Any) -> None:
    """``GET /bench/vms``: the handler of ``GET /api/v1/vms`` with a fixed caller, no auth."""
    from corral.server.http.routes_vms import list_vms

    svc = server.services

    async def twin(q: Listing) -> Any:
        return await list_vms(svc=svc, caller=caller, q=q)

    server.app.add_api_route(TWIN, twin, methods=["GET"], response_model=Page[Vm])


async def current_caller_of(server: object, token: str) -> object:
    """The platform admin's ``Caller``, as the token would resolve it."""
    from corral.server.identity.directory import load_caller
    from corral.server.services import auth

    svc = server.services  # type: ignore[attr-defined]
    user_id = await auth.check_token(svc=svc, token=token)
    return await load_caller(svc.sessionmaker, svc.callers, user_id)
