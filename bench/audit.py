"""Audit-log write overhead: latency of one mutating API call with the audit middleware on and off
(same route, same server, same process, same run), and the rate the batched writer sustains.

A server runs in this process (plain HTTP on loopback). The call is ``POST /api/v1/projects/{id}/
tags`` with ``{"tags": ["x"]}`` (token auth): cheap, repeatable, and it answers 202 with an
operation finished synchronously. Baseline "audit off": a second app built by ``create_app`` on the
same services but without the ``AuditCapture`` middleware, served by a second listener of this
process. The two calls are interleaved one by one, in alternating order (the machine's load
drifts: blocks of calls would measure the drift); p50s. So the p50 ratio is what the request
itself pays: capturing it, building its record and queueing it. The insert is done in the
background, in batches, on the same event loop (both sides share that cost, mostly in a few
calls above the median): it is the second figure.

Writer throughput: copies of a real record (read back from the audit table) are queued on a fresh
``AuditWriter`` of the server's database and flushed; records/s from the first ``record`` call
until they are committed (its inverse: the background cost of one audited call). Baseline: the
audited calls one client makes per second (1 / the audited p50), so the ratio is the writer's
headroom over that request rate.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.common import BenchContext, Figure, median
from corral.util.http1 import Http1Client

NAME = "audit"
TARGET = "audit adds <= 10% at p50 (auth's; the issue sets none)"
WRITER_TARGET = ">= 10x one client's audited call rate"
BODY = json.dumps({"tags": ["x"]}).encode()


async def _once(http: Http1Client, url: str, headers: dict[str, str]) -> float:
    """Seconds one ``POST`` takes."""
    t0 = time.perf_counter()
    r = await http.request("POST", url, content=BODY, headers=headers)
    elapsed = time.perf_counter() - t0
    if r.status != 202:
        raise RuntimeError(f"POST {url}: {r.status} {r.text[:200]}")
    return elapsed


def app_without_audit(svc: Any) -> Any:
    """The server's app as ``create_app`` builds it, minus the audit middleware."""
    from corral.server.app import create_app
    from corral.server.http.audit_mw import AuditCapture

    app = create_app(svc)
    app.user_middleware = [
        m for m in app.user_middleware if getattr(m, "cls", None) is not AuditCapture
    ]
    return app


async def _template(svc: Any) -> dict[str, Any]:
    """The newest audit record, as the writer takes it (keys: ``COLUMNS``)."""
    from sqlalchemy import select

    from corral.server.services.audit import COLUMNS, TABLE

    async with svc.db.connect() as conn:
        row = (await conn.execute(select(TABLE).order_by(TABLE.c.id.desc()).limit(1))).one()
    return {c: row._mapping[c] for c in COLUMNS}


async def writer_rate(svc: Any, n: int) -> float:
    """Records/s a fresh ``AuditWriter`` commits ``n`` copies of a real record at."""
    from corral.server.services.audit import AuditWriter

    rec = await _template(svc)
    writer = AuditWriter(lambda: svc.db, max_queue=n + 1)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            writer.record(dict(rec))
        if not await writer.flush(timeout=300):
            raise RuntimeError("the audit writer did not flush")
        elapsed = time.perf_counter() - t0
    finally:
        await writer.close()
    if writer.written != n or writer.dropped:
        raise RuntimeError(f"audit writer wrote {writer.written}/{n}, dropped {writer.dropped}")
    return n / elapsed


async def run(ctx: BenchContext) -> list[Figure]:
    from corral.server.app import start
    from corral.server.settings import ServerSettings
    from corral.util.serving import start_listener

    n = 60 if ctx.quick else 400
    rounds = 2 if ctx.quick else 5
    records = 500 if ctx.quick else 20_000
    password = "bench-admin-password-123"
    server = await start(ServerSettings(data_dir=ctx.workdir / "server", host="127.0.0.1",
                                        port=0, tls=False, admin_password=password))  # fmt: skip
    bare = app_without_audit(server.services)
    listener = await start_listener(bare, host="127.0.0.1", port=0)
    http = Http1Client(timeout=30)
    writer = server.app.state.audit
    try:
        url, bare_url = server.url, f"http://127.0.0.1:{listener.port}"
        body = json.dumps({"username": "admin", "password": password}).encode()
        r = await http.request("POST", f"{url}/api/v1/auth/login", content=body,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        token = json.loads(r.content)["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        path = f"/api/v1/projects/{await _project_id(server.services)}/tags"
        on_s: list[float] = []
        off_s: list[float] = []
        for _ in range(30):  # warm-up
            await _once(http, url + path, headers)
            await _once(http, bare_url + path, headers)
        await writer.flush()
        before = writer.written
        for i in range(rounds * n):  # interleaved, order alternating: a load change hits both
            for audited in (True, False) if i % 2 else (False, True):
                if audited:
                    on_s.append(await _once(http, url + path, headers))
                else:
                    off_s.append(await _once(http, bare_url + path, headers))
        await writer.flush()
        audited_records = writer.written - before
        if audited_records != rounds * n:  # one record per audited call, none for the others
            raise RuntimeError(f"{audited_records} audit records for {rounds * n} audited calls")
        rate = await writer_rate(server.services, records)
    finally:
        await http.aclose()
        await listener.stop()
        await bare.state.audit.close()
        await server.stop()
    on, off = median(on_s), median(off_s)
    return [
        Figure("audit.write_p50", on, "s", TARGET, off, "same route, audit off",
               note="POST …/tags, token auth"),
        Figure("audit.writer_records_per_s", rate, "rec/s", WRITER_TARGET, 1 / on,
               "audited calls/s, one client", note=f"{1e6 / rate:.0f} µs a record, batched"),
    ]  # fmt: skip


async def _project_id(svc: Any) -> str:
    from sqlalchemy import select

    from corral.server.db.tables import ProjectRow

    async with svc.sessionmaker() as s:
        pid = await s.scalar(select(ProjectRow.id).order_by(ProjectRow.created_at).limit(1))
    assert isinstance(pid, str)
    return pid
