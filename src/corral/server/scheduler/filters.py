"""Host filters: each says why a host cannot take a VM, or ``None`` when it can."""

from __future__ import annotations

from collections.abc import Callable

from corral.server.scheduler.model import HostView, PlacementRequest

Filter = Callable[[PlacementRequest, HostView], str | None]
"""``(request, host) -> None`` when the host passes, else a short human reason."""


def _num(value: float) -> str:
    """``2`` for 2.0, ``1.5`` for 1.5: no trailing ``.0`` in messages."""
    return f"{value:g}"


def pinned_host(req: PlacementRequest, host: HostView) -> str | None:
    """Only the requested host passes when the request is pinned."""
    if req.host_id is None or req.host_id == host.id:
        return None
    return f"not the requested host {req.host_id}"


def connected(req: PlacementRequest, host: HostView) -> str | None:
    """The host's agent must be connected."""
    return None if host.connected else "agent not connected"


def enabled(req: PlacementRequest, host: HostView) -> str | None:
    """The operator must not have disabled the host."""
    return None if host.enabled else "host disabled"


def cpu(req: PlacementRequest, host: HostView) -> str | None:
    """Free vCPUs after overcommit (``threads * cpu_overcommit - used``) must cover the request."""
    free = host.cpus_free
    if free >= req.cpus:
        return None
    return (
        f"free vCPUs {free} < {req.cpus} requested ({host.cpu_threads} threads"
        f" x {_num(host.cpu_overcommit)} overcommit, {host.cpus_used} used)"
    )


def memory(req: PlacementRequest, host: HostView) -> str | None:
    """Free memory after overcommit (``memory_mb * memory_overcommit - used``) must cover it."""
    free = host.memory_mb_free
    if free >= req.memory_mb:
        return None
    return (
        f"free memory {free} MiB < {req.memory_mb} MiB requested ({host.memory_mb} MiB"
        f" x {_num(host.memory_overcommit)} overcommit, {host.memory_mb_used} MiB used)"
    )


def disk(req: PlacementRequest, host: HostView) -> str | None:
    """Free disk (never overcommitted) must cover the request."""
    free = host.disk_gb_free
    if free >= req.disk_gb:
        return None
    return (
        f"free disk {_num(free)} GB < {_num(req.disk_gb)} GB requested"
        f" ({_num(host.disk_gb)} GB, {_num(host.disk_gb_used)} GB used)"
    )


def storage(req: PlacementRequest, host: HostView) -> str | None:
    """The host must reach every storage pool of the VM's volumes (and each must have room)."""
    if req.storage_hosts is None or host.id in req.storage_hosts:
        return None
    return "does not reach the storage pools of the VM's volumes"


DEFAULT_FILTERS: tuple[Filter, ...] = (
    pinned_host,
    connected,
    enabled,
    storage,
    cpu,
    memory,
    disk,
)
"""Every filter a host must pass, in the order reasons are reported."""
