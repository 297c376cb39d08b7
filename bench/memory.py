"""(d) RSS of ``corral server`` with 100,000 VMs in its database, after serving VM list pages.

Baseline of the same run: RSS of an idle server with an empty database after the same warm-up
requests (login, health, an empty list). Measured with psutil; the server's children (none) and
shared libraries count as the OS counts them.
"""

from __future__ import annotations

from bench.common import BenchContext, Figure, rss_mib, start_server
from bench.listing import login, queries, seeded_server, time_gets

NAME = "memory"
TARGET = "(no target: reported)"


async def run(ctx: BenchContext) -> list[Figure]:
    vms = 10_000 if ctx.quick else 100_000
    proc, url, password = start_server(ctx.workdir / "empty")
    try:
        http = await login(url, password)
        await time_gets(http, url, ["/health", "/vms?limit=100", "/hosts"], 30)
        await http.aclose()
        idle = rss_mib(proc.pid)
    finally:
        proc.stop()
    with seeded_server(ctx, vms) as (proc, url, password, hosts):
        http = await login(url, password)
        try:
            paths = queries(hosts, vms)
            await time_gets(http, url, paths, 3 * len(paths))
            loaded = rss_mib(proc.pid)
        finally:
            await http.aclose()
    return [
        Figure("memory.server_rss", loaded, "MiB", TARGET, idle, "idle server, empty database",
               note=f"{vms} VMs in the database, after {3 * len(paths)} list pages"),
    ]  # fmt: skip
