"""The placement service's cached ranking (``services.placement._Views.best``) lists exactly what
``scheduler.rank`` would list first, while claims change the hosts one by one."""

from __future__ import annotations

import random
from dataclasses import replace

from corral.api.errors import NoHostAvailable
from corral.server.scheduler import HostView, PlacementRequest, rank
from corral.server.services.placement import _Views


def _host(rng: random.Random, i: int) -> HostView:
    threads = rng.choice([2, 4, 8])
    memory = rng.choice([2048, 4096, 8192])
    return HostView(
        id=f"h{i:04d}",
        name=f"host{i}",
        connected=rng.random() > 0.05,
        enabled=rng.random() > 0.05,
        cpu_threads=threads,
        memory_mb=memory,
        disk_gb=float(rng.choice([20, 50, 100])),
        cpus_used=rng.randint(0, threads * 2),
        memory_mb_used=rng.choice([0, 512, 1024]),
        disk_gb_used=float(rng.randint(0, 10)),
        cpu_overcommit=2.0,
    )


def _expected(req: PlacementRequest, hosts: dict[str, HostView], n: int) -> list[str]:
    try:
        return [h.id for h in rank(req, list(hosts.values()))[:n]]
    except NoHostAvailable:
        return []


def test_best_matches_rank_while_claims_change_the_hosts() -> None:
    rng = random.Random(7)
    hosts = {h.id: h for h in (_host(rng, i) for i in range(200))}
    views = _Views(dict(hosts), expires=0.0)
    shapes = [
        PlacementRequest(cpus=1, memory_mb=256, disk_gb=1),
        PlacementRequest(cpus=2, memory_mb=1024, disk_gb=5),
        PlacementRequest(cpus=1, memory_mb=256, disk_gb=1, host_id="h0003"),
    ]
    for _ in range(3000):
        req = rng.choice(shapes)
        best = [h.id for h in views.best(req, 3)]
        assert best == _expected(req, views.hosts, 3)
        if not best:
            continue
        # claim on the best host (or, as a racing server would, on another one), or release
        target = views.hosts[best[0] if rng.random() < 0.8 else rng.choice(list(views.hosts))]
        sign = 1 if rng.random() < 0.9 else -1
        views.replace(
            replace(
                target,
                cpus_used=target.cpus_used + sign * req.cpus,
                memory_mb_used=target.memory_mb_used + sign * req.memory_mb,
                disk_gb_used=target.disk_gb_used + sign * req.disk_gb,
            )
        )
    assert len(views.rankings) == 2  # unpinned sizes only
