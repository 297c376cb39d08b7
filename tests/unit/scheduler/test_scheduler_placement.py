"""Placement: least-loaded choice, pinning, deterministic ties, and why every host was refused."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from corral.api.errors import CorralError, NoHostAvailable
from corral.server.scheduler import (
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    HostView,
    PlacementRequest,
    place,
    rank,
    refusals,
)


def host(i: int, **kw: Any) -> HostView:
    base: dict[str, Any] = {
        "id": f"h{i:04d}",
        "name": f"host{i}",
        "connected": True,
        "enabled": True,
        "cpu_threads": 8,
        "memory_mb": 16384,
        "disk_gb": 100.0,
        "cpus_used": 0,
        "memory_mb_used": 0,
        "disk_gb_used": 0.0,
    }
    return HostView(**(base | kw))


SMALL = PlacementRequest(cpus=1, memory_mb=1024, disk_gb=10)


def test_picks_the_least_loaded_host() -> None:
    hosts = [host(1, memory_mb_used=8192), host(2, memory_mb_used=1024), host(3, cpus_used=6)]
    assert place(SMALL, hosts).id == "h0002"
    assert [h.id for h in rank(SMALL, hosts)] == ["h0002", "h0003", "h0001"]


def test_ties_break_on_lowest_id_whatever_the_input_order() -> None:
    hosts = [host(i) for i in (5, 2, 9, 3)]
    assert place(SMALL, hosts).id == "h0002"
    assert place(SMALL, hosts[::-1]).id == "h0002"
    assert [h.id for h in rank(SMALL, hosts)] == ["h0002", "h0003", "h0005", "h0009"]


def test_fifty_vms_spread_evenly_over_ten_hosts() -> None:
    hosts = {h.id: h for h in (host(i) for i in range(10))}
    req = PlacementRequest(cpus=1, memory_mb=512, disk_gb=2)
    placed: Counter[str] = Counter()
    for _ in range(50):
        chosen = place(req, list(hosts.values()))
        hosts[chosen.id] = chosen.with_claim(req)
        placed[chosen.id] += 1
    assert sorted(placed.values()) == [5] * 10
    assert all(h.vm_count == 5 and h.memory_mb_used == 2560 for h in hosts.values())


def test_bigger_hosts_take_proportionally_more() -> None:
    hosts = {h.id: h for h in (host(1, memory_mb=32768, cpu_threads=16), host(2), host(3))}
    req = PlacementRequest(cpus=1, memory_mb=1024, disk_gb=1)
    for _ in range(32):
        chosen = place(req, list(hosts.values()))
        hosts[chosen.id] = chosen.with_claim(req)
    assert [hosts[k].vm_count for k in ("h0001", "h0002", "h0003")] == [16, 8, 8]


def test_fills_hosts_until_nothing_fits_then_explains() -> None:
    hosts = {h.id: h for h in (host(i, cpu_threads=2, memory_mb=4096) for i in range(3))}
    req = PlacementRequest(cpus=1, memory_mb=2048, disk_gb=1)
    for _ in range(6):
        chosen = place(req, list(hosts.values()))
        hosts[chosen.id] = chosen.with_claim(req)
    with pytest.raises(NoHostAvailable) as exc:
        place(req, list(hosts.values()))
    assert [r["reasons"] for r in exc.value.context["hosts"]] == [
        [
            "free vCPUs 0 < 1 requested (2 threads x 1 overcommit, 2 used)",
            "free memory 0 MiB < 2048 MiB requested (4096 MiB x 1 overcommit, 4096 MiB used)",
        ]
    ] * 3


def test_refusal_lists_every_host_with_all_its_reasons() -> None:
    hosts = [
        host(1, connected=False),
        host(2, enabled=False, memory_mb_used=16000),
        host(3, cpus_used=8, disk_gb_used=95.0),
    ]
    with pytest.raises(NoHostAvailable) as exc:
        place(SMALL, hosts)
    err = exc.value
    assert err.code == "no_host_available" and err.http_status == 409
    assert err.message == "no host fits 1 vCPUs, 1024 MiB memory, 10 GB disk: 3 hosts refused"
    assert err.context == {
        "hosts": [
            {"host_id": "h0001", "host_name": "host1", "reasons": ["agent not connected"]},
            {
                "host_id": "h0002",
                "host_name": "host2",
                "reasons": [
                    "host disabled",
                    "free memory 384 MiB < 1024 MiB requested"
                    " (16384 MiB x 1 overcommit, 16000 MiB used)",
                ],
            },
            {
                "host_id": "h0003",
                "host_name": "host3",
                "reasons": [
                    "free vCPUs 0 < 1 requested (8 threads x 1 overcommit, 8 used)",
                    "free disk 5 GB < 10 GB requested (100 GB, 95 GB used)",
                ],
            },
        ]
    }
    # The context survives the wire: it rebuilds the same error class.
    rebuilt = CorralError.from_body(err.to_body())
    assert isinstance(rebuilt, NoHostAvailable) and rebuilt.context == err.context


def test_rank_raises_the_same_explanation() -> None:
    hosts = [host(1, connected=False)]
    with pytest.raises(NoHostAvailable) as exc:
        rank(SMALL, hosts)
    assert exc.value.context["hosts"][0]["reasons"] == ["agent not connected"]
    assert exc.value.message.endswith(": 1 host refused")


def test_no_hosts_at_all() -> None:
    with pytest.raises(NoHostAvailable) as exc:
        place(SMALL, [])
    assert (
        exc.value.message == "no host fits 1 vCPUs, 1024 MiB memory, 10 GB disk: there are no hosts"
    )
    assert exc.value.context == {"hosts": []}


def test_pinning_picks_the_pinned_host_even_if_busier() -> None:
    hosts = [host(1), host(2, memory_mb_used=12000)]
    pinned = PlacementRequest(cpus=1, memory_mb=1024, disk_gb=10, host_id="h0002")
    assert place(pinned, hosts).id == "h0002"
    assert [h.id for h in rank(pinned, hosts)] == ["h0002"]


def test_pinned_host_that_cannot_fit_is_not_replaced_by_another() -> None:
    hosts = [host(1), host(2, enabled=False)]
    pinned = PlacementRequest(cpus=1, memory_mb=1024, disk_gb=10, host_id="h0002")
    with pytest.raises(NoHostAvailable) as exc:
        place(pinned, hosts)
    assert "on host h0002" in exc.value.message
    assert exc.value.context["hosts"] == [
        {"host_id": "h0001", "host_name": "host1", "reasons": ["not the requested host h0002"]},
        {"host_id": "h0002", "host_name": "host2", "reasons": ["host disabled"]},
    ]


def test_refusals_skip_hosts_that_fit() -> None:
    refused = refusals(SMALL, [host(1), host(2, connected=False)])
    assert [(r.host_id, r.reasons) for r in refused] == [("h0002", ["agent not connected"])]


def test_custom_filters_and_weighers() -> None:
    def packing(req: PlacementRequest, h: HostView) -> float:
        return float(h.vm_count)

    def no_odd_ids(req: PlacementRequest, h: HostView) -> str | None:
        return "odd" if int(h.id[1:]) % 2 else None

    hosts = [host(1, vm_count=9), host(2, vm_count=3), host(4, vm_count=5)]
    assert place(SMALL, hosts, weighers=[(1.0, packing)]).id == "h0001"
    assert place(SMALL, hosts, filters=[no_odd_ids], weighers=[(1.0, packing)]).id == "h0004"
    assert [h.id for h in rank(SMALL, hosts, weighers=[(-1.0, packing)])] == [
        "h0002",
        "h0004",
        "h0001",
    ]


def random_hosts(rng: random.Random, n: int) -> list[HostView]:
    out = []
    for _ in range(n):
        threads = rng.choice([0, 2, 8, 32])
        mem = rng.choice([0, 4096, 65536])
        disk = rng.choice([0.0, 50.0, 1000.0])
        out.append(
            host(
                rng.randrange(n * 2),  # duplicate ids are allowed here: ties must still agree
                connected=rng.random() > 0.1,
                enabled=rng.random() > 0.1,
                cpu_threads=threads,
                memory_mb=mem,
                disk_gb=disk,
                cpus_used=rng.randint(0, threads * 2),
                memory_mb_used=rng.randint(0, mem),
                disk_gb_used=rng.uniform(0, disk),
                cpu_overcommit=rng.choice([1.0, 1.5, 4.0]),
                memory_overcommit=rng.choice([1.0, 1.2]),
            )
        )
    return out


def test_fused_default_path_matches_the_generic_filters_and_weighers() -> None:
    rng = random.Random(7)
    generic: dict[str, Any] = {"filters": list(DEFAULT_FILTERS), "weighers": list(DEFAULT_WEIGHERS)}
    outcomes: Counter[str] = Counter()
    for _ in range(300):
        hosts = random_hosts(rng, rng.randint(0, 30))
        pin = rng.choice([None, None, hosts[0].id if hosts else "nope"])
        storage = rng.choice([None, None, frozenset(h.id for h in hosts if rng.random() < 0.5)])
        req = PlacementRequest(
            cpus=rng.randint(0, 8),
            memory_mb=rng.choice([0, 512, 4096]),
            disk_gb=10,
            host_id=pin,
            storage_hosts=storage,
        )
        try:
            fast = rank(req, hosts)
        except NoHostAvailable as exc:
            with pytest.raises(NoHostAvailable) as slow_exc:
                rank(req, hosts, **generic)
            assert slow_exc.value.context == exc.context
            outcomes["refused"] += 1
            continue
        outcomes["placed"] += 1
        assert [id(h) for h in rank(req, hosts, **generic)] == [id(h) for h in fast]
        assert place(req, hosts) is fast[0]
        assert place(req, hosts, **generic) is fast[0]
    assert min(outcomes["placed"], outcomes["refused"]) > 50


def test_storage_hosts_limit_placement_and_explain_the_refusal() -> None:
    hosts = [host(i, cpu_threads=8, memory_mb=8192, disk_gb=100.0) for i in range(3)]
    req = PlacementRequest(cpus=1, memory_mb=512, disk_gb=1, storage_hosts=frozenset({"h0002"}))
    assert [h.id for h in rank(req, hosts)] == ["h0002"]
    none = PlacementRequest(cpus=1, memory_mb=512, disk_gb=1, storage_hosts=frozenset())
    with pytest.raises(NoHostAvailable) as exc:
        place(none, hosts)
    reasons = [r["reasons"] for r in exc.value.context["hosts"]]
    assert all("does not reach the storage pools" in " ".join(r) for r in reasons)


def test_placement_among_a_thousand_hosts() -> None:
    """Correct at scale; prints the time per placement (run with -s), no timing assert."""
    rng = random.Random(3)
    hosts = [
        host(
            i,
            cpu_threads=32,
            memory_mb=131072,
            disk_gb=2000.0,
            cpu_overcommit=4.0,
            cpus_used=rng.randint(0, 100),
            memory_mb_used=rng.randint(0, 120000),
            disk_gb_used=rng.uniform(0, 1500),
        )
        for i in range(1000)
    ]
    req = PlacementRequest(cpus=2, memory_mb=2048, disk_gb=20)
    best = place(req, hosts)
    assert len(rank(req, hosts)) == 1000  # the worst case: every host passes and is weighed
    assert best is rank(req, hosts)[0]
    assert best is place(req, hosts, filters=list(DEFAULT_FILTERS))
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        place(req, hosts)
    print(f"\nplace among 1000 hosts: {(time.perf_counter() - start) / n * 1e3:.3f} ms")
