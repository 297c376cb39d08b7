"""(c) ``GET /api/v1/vms?limit=100`` with 100,000 VMs in the database: p50 and p95 of ~200 GETs.

The VM rows (and a zone, a cluster, 10 hosts and an image they point to) are bulk-inserted with
SQLAlchemy Core straight into the database of a stopped ``corral server``, which is then started
again. The GETs cycle through pages and sorts a user would ask for (first page, a deep page, newest
first, by name, by an unindexed column, filtered by status and by host). Baseline of the same run:
``GET /api/v1/health`` (auth-free, one trivial query).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import BenchContext, Figure, Proc, median, percentile, start_server
from corral.util.http1 import Http1Client

NAME = "listing"
TARGET = "p50 <= 50 ms"
STATUSES = ["running"] * 6 + ["stopped"] * 3 + ["paused", "error"]


def _hex() -> str:
    return uuid.uuid4().hex


def seed(db: Path, vms: int) -> list[str]:
    """Insert ``vms`` VM rows (and what they reference) into a migrated Corral database; returns
    the host ids. Plain ``sqlite3`` + ``executemany``: 100,000 rows take a few seconds."""
    from sqlalchemy import create_engine, insert

    from corral.server.db.tables import ClusterRow, HostRow, ImageRow, VmRow, ZoneRow

    engine = create_engine(f"sqlite:///{db}")
    now = datetime.now(UTC).replace(tzinfo=None)
    zone, cluster, image = _hex(), _hex(), _hex()
    hosts = [_hex() for _ in range(10)]
    facts = {"cpu_threads": 64, "memory_mb": 1 << 20, "disk_gb_total": 1e5}
    with engine.begin() as conn:
        conn.execute(insert(ZoneRow).values(id=zone, name="z", description="", created_at=now,
                                            updated_at=now))  # fmt: skip
        conn.execute(insert(ClusterRow).values(
            id=cluster, name="c", zone_id=zone, description="", cpu_overcommit=4.0,
            memory_overcommit=1.0, created_at=now, updated_at=now))  # fmt: skip
        conn.execute(insert(ImageRow).values(
            id=image, name="img", status="ready", format="qcow2", size_bytes=1,
            virtual_size_bytes=1 << 30, created_at=now, updated_at=now))  # fmt: skip
        conn.execute(insert(HostRow), [
            {"id": h, "name": f"h{i}", "cluster_id": cluster, "url": f"http://h{i}",
             "token_sealed": _hex(), "token_digest": _hex(), "status": "connected", "enabled": True, "facts": facts, "created_at": now,
             "updated_at": now} for i, h in enumerate(hosts)])  # fmt: skip
        rng = random.Random(1)
        batch = []
        for i in range(vms):
            at = now - timedelta(seconds=vms - i)
            batch.append({
                "id": _hex(), "name": f"vm-{i:06d}-{rng.randrange(10**6):06d}",
                "status": rng.choice(STATUSES), "power_state": "running", "cpus": rng.randint(1, 8),
                "memory_mb": rng.choice([512, 1024, 2048, 4096]), "disk_gb": 10,
                "image_id": image, "host_id": hosts[i % len(hosts)], "claimed": True,
                "vnc_password": "password", "created_at": at, "updated_at": at,
            })  # fmt: skip
            if len(batch) == 10_000:
                conn.execute(insert(VmRow), batch)
                batch = []
        if batch:
            conn.execute(insert(VmRow), batch)
    engine.dispose()
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return hosts


@contextmanager
def seeded_server(ctx: BenchContext, vms: int) -> Iterator[tuple[Proc, str, str, list[str]]]:
    """A ``corral server`` whose database holds ``vms`` VMs: (process, URL, password, host ids)."""
    data = ctx.workdir / f"seeded-{vms}"
    proc, _, password = start_server(data)
    proc.stop()  # migrated, admin created
    t0 = time.monotonic()
    hosts = seed(data / "corral.db", vms)
    ctx.say(f"inserted {vms} VM rows in {time.monotonic() - t0:.1f} s")
    proc = Proc(proc.args, data.with_suffix(".restart.log"))
    try:
        url = proc.wait_for(r"listening on (\S+)", 60).group(1)
        yield proc, url, password, hosts
    finally:
        proc.stop()


async def login(url: str, password: str) -> Http1Client:
    http = Http1Client(timeout=60)
    body = json.dumps({"username": "admin", "password": password}).encode()
    r = await http.request("POST", f"{url}/api/v1/auth/login", content=body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
    token = json.loads(r.content)["token"]
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def queries(hosts: list[str], vms: int) -> list[str]:
    """The pages a user asks for, one of each kind."""
    return [
        "/vms?limit=100",
        "/vms?limit=100&offset=100",
        f"/vms?limit=100&offset={vms // 2}",
        "/vms?limit=100&sort=-created_at",
        "/vms?limit=100&sort=name",
        "/vms?limit=100&sort=-cpus",
        "/vms?limit=100&status=running",
        f"/vms?limit=100&host_id={hosts[3]}",
        "/vms?limit=100&status=error&sort=-created_at",
        "/vms?limit=100&offset=1000&sort=name",
    ]


async def time_gets(http: Http1Client, url: str, paths: list[str], n: int) -> list[float]:
    """Seconds per GET (status checked), cycling through ``paths``."""
    times = []
    for i in range(n):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        r = await http.request("GET", f"{url}/api/v1{path}")
        times.append(time.perf_counter() - t0)
        if r.status != 200:
            raise RuntimeError(f"GET {path}: {r.status} {r.text[:300]}")
    return times


async def run(ctx: BenchContext) -> list[Figure]:
    vms = 10_000 if ctx.quick else 100_000
    n = 40 if ctx.quick else 200
    with seeded_server(ctx, vms) as (_, url, password, hosts):
        http = await login(url, password)
        try:
            paths = queries(hosts, vms)
            await time_gets(http, url, paths, len(paths))  # warm-up: caches, compiled statements
            health = await time_gets(http, url, ["/health"], n)
            pages = await time_gets(http, url, paths, n)
            by_kind = {p: median(pages[i :: len(paths)]) for i, p in enumerate(paths)}
        finally:
            await http.aclose()
    slowest = max(by_kind, key=lambda p: by_kind[p])
    label = "GET /health"
    note = f"{vms} VMs, {n} GETs over {len(paths)} page kinds; slowest: {slowest} {by_kind[slowest] * 1000:.0f} ms"
    for path, t in by_kind.items():
        ctx.say(f"{t * 1000:7.1f} ms  {path}")
    return [
        Figure("listing.vms_page_p50", median(pages), "s", TARGET, median(health), label, note),
        Figure("listing.vms_page_p95", percentile(pages, 95), "s", "(p95)",
               percentile(health, 95), label + " p95"),
    ]  # fmt: skip
