"""Each scheduler filter: passes when the host can take the VM, else a precise reason."""

from __future__ import annotations

from typing import Any

import pytest

from corral.server.scheduler import DEFAULT_FILTERS, HostView, PlacementRequest
from corral.server.scheduler import filters as f


def host(**kw: Any) -> HostView:
    base: dict[str, Any] = {
        "id": "h1",
        "name": "host1",
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


REQ = PlacementRequest(cpus=2, memory_mb=1024, disk_gb=10)


def test_pinned_host() -> None:
    assert f.pinned_host(REQ, host()) is None
    pinned = PlacementRequest(cpus=2, memory_mb=1024, disk_gb=10, host_id="h1")
    assert f.pinned_host(pinned, host()) is None
    assert f.pinned_host(pinned, host(id="h2")) == "not the requested host h1"


def test_connected_and_enabled() -> None:
    assert f.connected(REQ, host()) is None
    assert f.connected(REQ, host(connected=False)) == "agent not connected"
    assert f.enabled(REQ, host()) is None
    assert f.enabled(REQ, host(enabled=False)) == "host disabled"


def test_cpu_exact_fit_passes_and_one_more_fails() -> None:
    assert f.cpu(REQ, host(cpus_used=6)) is None
    assert f.cpu(REQ, host(cpus_used=7)) == (
        "free vCPUs 1 < 2 requested (8 threads x 1 overcommit, 7 used)"
    )


def test_cpu_overcommit() -> None:
    h = host(cpu_threads=4, cpu_overcommit=4.0, cpus_used=14)
    assert h.cpus_total == 16
    assert f.cpu(REQ, h) is None
    assert f.cpu(REQ, host(cpu_threads=4, cpu_overcommit=4.0, cpus_used=15)) == (
        "free vCPUs 1 < 2 requested (4 threads x 4 overcommit, 15 used)"
    )


def test_overcommit_totals_round_down_without_float_noise() -> None:
    assert host(cpu_threads=3, cpu_overcommit=1.1).cpus_total == 3
    assert host(cpu_threads=10, cpu_overcommit=1.1).cpus_total == 11  # 11.000000000000002
    assert host(memory_mb=1000, memory_overcommit=1.5).memory_mb_total == 1500


def test_memory_with_and_without_overcommit() -> None:
    assert f.memory(REQ, host(memory_mb=2048, memory_mb_used=1024)) is None
    assert f.memory(REQ, host(memory_mb=2048, memory_mb_used=1025)) == (
        "free memory 1023 MiB < 1024 MiB requested (2048 MiB x 1 overcommit, 1025 MiB used)"
    )
    over = host(memory_mb=2048, memory_overcommit=1.5, memory_mb_used=2048)
    assert over.memory_mb_free == 1024
    assert f.memory(REQ, over) is None


def test_memory_reason_when_overcommit_was_lowered_below_usage() -> None:
    h = host(memory_mb=1000, memory_overcommit=1.0, memory_mb_used=1200)
    assert h.memory_mb_free == -200
    assert f.memory(PlacementRequest(cpus=1, memory_mb=16, disk_gb=1), h) == (
        "free memory -200 MiB < 16 MiB requested (1000 MiB x 1 overcommit, 1200 MiB used)"
    )


def test_disk_is_not_overcommitted() -> None:
    assert f.disk(REQ, host(disk_gb=100.0, disk_gb_used=90.0)) is None
    assert f.disk(REQ, host(disk_gb=100.0, disk_gb_used=90.5)) == (
        "free disk 9.5 GB < 10 GB requested (100 GB, 90.5 GB used)"
    )


@pytest.mark.parametrize(
    ("kw", "failing"),
    [
        ({}, []),
        ({"connected": False}, ["connected"]),
        ({"enabled": False, "cpus_used": 8}, ["enabled", "cpu"]),
        ({"memory_mb_used": 16000, "disk_gb_used": 99.0}, ["memory", "disk"]),
        ({"id": "other"}, ["pinned_host"]),
    ],
)
def test_default_filters_cover_every_rule(kw: dict[str, Any], failing: list[str]) -> None:
    req = PlacementRequest(cpus=2, memory_mb=1024, disk_gb=10, host_id="h1")
    failed = [flt.__name__ for flt in DEFAULT_FILTERS if flt(req, host(**kw)) is not None]
    assert failed == failing


def test_with_claim_adds_usage_and_recomputes_free() -> None:
    h = host(cpu_overcommit=2.0).with_claim(REQ)
    assert (h.cpus_used, h.memory_mb_used, h.disk_gb_used, h.vm_count) == (2, 1024, 10, 1)
    assert (h.cpus_free, h.memory_mb_free, h.disk_gb_free) == (14, 15360, 90.0)
