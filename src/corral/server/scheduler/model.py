"""What the scheduler sees: hosts with their capacity and usage, and what a VM asks for."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

_EPS = 1e-9


@dataclass(frozen=True, kw_only=True)
class HostView:
    """A host as the scheduler sees it: raw size, overcommit ratios and what its VMs claimed.

    ``*_used`` are the sums of what the VMs placed on the host claimed (running or not). Totals after
    overcommit are ``cpus_total`` (``cpu_threads * cpu_overcommit``, rounded down) and
    ``memory_mb_total``; disk is not overcommitted. ``*_free`` are totals minus used; they may be
    negative when an operator lowered an overcommit ratio below what is already claimed.
    Immutable; ``with_claim`` returns the host after one more placement.
    """

    id: str
    name: str
    connected: bool
    enabled: bool
    cpu_threads: int
    memory_mb: int
    disk_gb: float
    cpus_used: int
    memory_mb_used: int
    disk_gb_used: float
    cpu_overcommit: float = 1.0
    memory_overcommit: float = 1.0
    vm_count: int = 0
    cpus_total: int = field(init=False, repr=False, compare=False)
    memory_mb_total: int = field(init=False, repr=False, compare=False)
    cpus_free: int = field(init=False, repr=False, compare=False)
    memory_mb_free: int = field(init=False, repr=False, compare=False)
    disk_gb_free: float = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        *,
        id: str,
        name: str,
        connected: bool,
        enabled: bool,
        cpu_threads: int,
        memory_mb: int,
        disk_gb: float,
        cpus_used: int,
        memory_mb_used: int,
        disk_gb_used: float,
        cpu_overcommit: float = 1.0,
        memory_overcommit: float = 1.0,
        vm_count: int = 0,
    ) -> None:
        # Hand-written: the server builds one view per host per placement, and the generated
        # frozen __init__ (one object.__setattr__ per field) is 2.3x slower than one dict update.
        # The derived fields are computed once because filters and weighers read them per host.
        cpus_total = int(cpu_threads * cpu_overcommit + _EPS)
        memory_mb_total = int(memory_mb * memory_overcommit + _EPS)
        self.__dict__.update(
            id=id,
            name=name,
            connected=connected,
            enabled=enabled,
            cpu_threads=cpu_threads,
            memory_mb=memory_mb,
            disk_gb=disk_gb,
            cpus_used=cpus_used,
            memory_mb_used=memory_mb_used,
            disk_gb_used=disk_gb_used,
            cpu_overcommit=cpu_overcommit,
            memory_overcommit=memory_overcommit,
            vm_count=vm_count,
            cpus_total=cpus_total,
            memory_mb_total=memory_mb_total,
            cpus_free=cpus_total - cpus_used,
            memory_mb_free=memory_mb_total - memory_mb_used,
            disk_gb_free=disk_gb - disk_gb_used,
        )

    def with_claim(self, req: PlacementRequest) -> HostView:
        """This host after placing ``req`` on it (usage added, one more VM)."""
        return replace(
            self,
            cpus_used=self.cpus_used + req.cpus,
            memory_mb_used=self.memory_mb_used + req.memory_mb,
            disk_gb_used=self.disk_gb_used + req.disk_gb,
            vm_count=self.vm_count + 1,
        )


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """What one VM claims on its host; ``host_id`` pins it to that host; ``storage_hosts`` (when
    not None) are the only hosts that reach every storage pool the VM's volumes are on."""

    cpus: int
    memory_mb: int
    disk_gb: float
    host_id: str | None = None
    storage_hosts: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class HostRefusal:
    """Why one host cannot take the VM: every filter it failed, in filter order."""

    host_id: str
    host_name: str
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in ``NoHostAvailable.context["hosts"]``."""
        return {"host_id": self.host_id, "host_name": self.host_name, "reasons": list(self.reasons)}
