"""Host weighers: higher is better; the default ones spread VMs to the least-loaded hosts."""

from __future__ import annotations

from collections.abc import Callable

from corral.server.scheduler.model import HostView, PlacementRequest

Weigher = Callable[[PlacementRequest, HostView], float]
"""``(request, host) -> score``, meant to lie in [0, 1] so weights compare like with like."""

WeightedWeigher = tuple[float, Weigher]
"""A weigher and its multiplier; a host's score is the sum of ``weight * weigher(req, host)``."""


def free_memory_ratio(req: PlacementRequest, host: HostView) -> float:
    """Share of the host's memory (after overcommit) still free once the VM is placed."""
    total = host.memory_mb_total
    if total <= 0:
        return 0.0
    return (host.memory_mb_free - req.memory_mb) / total


def free_cpu_ratio(req: PlacementRequest, host: HostView) -> float:
    """Share of the host's vCPUs (after overcommit) still free once the VM is placed."""
    total = host.cpus_total
    if total <= 0:
        return 0.0
    return (host.cpus_free - req.cpus) / total


def free_disk_ratio(req: PlacementRequest, host: HostView) -> float:
    """Share of the host's disk still free once the VM is placed."""
    total = host.disk_gb
    if total <= 0:
        return 0.0
    return (host.disk_gb_free - req.disk_gb) / total


MEMORY_WEIGHT = 1.0
CPU_WEIGHT = 0.5
DISK_WEIGHT = 0.25

DEFAULT_WEIGHERS: tuple[WeightedWeigher, ...] = (
    (MEMORY_WEIGHT, free_memory_ratio),
    (CPU_WEIGHT, free_cpu_ratio),
    (DISK_WEIGHT, free_disk_ratio),
)
"""Memory first (the scarce resource on most hosts), then CPU, then disk."""
