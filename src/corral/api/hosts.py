"""Hosts: servers running a Corral agent, their facts and capacity."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from corral.api.common import Model, Name, Ref, Resource


class HostStatus(StrEnum):
    connecting = "connecting"
    connected = "connected"
    disconnected = "disconnected"
    error = "error"


class HostFacts(Model):
    """What an agent reports about its machine."""

    hostname: str
    arch: str = "x86_64"
    cpu_model: str
    cpu_sockets: int = 1
    cpu_cores: int
    cpu_threads: int = Field(description="logical CPUs the host schedules VMs on")
    memory_mb: int
    disk_gb_total: float
    disk_gb_free: float
    hypervisor: str = Field(description="kvm, qemu (TCG) or simulator")
    kvm_usable: bool
    libvirt_version: str | None = None
    qemu_version: str | None = None
    driver: str = Field(description="compute driver: libvirt or simulator")
    tunnel_ip: str | None = Field(
        None,
        description="the host's VXLAN tunnel endpoint (its underlay address; None: no "
        "underlay configured, no vxlan port groups on this host)",
    )


class HostCapacity(Model):
    """Totals (after overcommit) and what VMs on the host have claimed."""

    cpus_total: int
    cpus_used: int
    memory_mb_total: int
    memory_mb_used: int
    disk_gb_total: float
    disk_gb_used: float


class Host(Resource):
    cluster_id: str
    url: str
    status: HostStatus
    enabled: bool
    facts: HostFacts | None = None
    capacity: HostCapacity
    last_heartbeat_at: datetime | None = None
    vm_count: int = 0


class HostCreate(Model):
    url: str = Field(description="agent URL, e.g. https://host1:7070", min_length=8, max_length=512)
    cluster: Ref = Field(description="cluster id or name")
    name: Name | None = Field(None, description="defaults to the host name the agent reports")
    cert_fingerprint: str | None = Field(
        None,
        description="SHA-256 fingerprint of the agent's bootstrap certificate (the agent logs it "
        "at start): enrollment stops if the agent presents another one. Unset: trust on first use",
        pattern=r"^([Ss][Hh][Aa]256:)?([0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$",
    )


class HostUpdate(Model):
    enabled: bool | None = None
