"""Settings of the agent process (command line flags map one to one onto these fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class AgentSettings(BaseModel):
    """How the agent runs. ``driver`` picks libvirt (one real host) or the simulator (``sim_hosts``
    simulated hosts, each served under ``/sim/<i>``, i = 0 … sim_hosts-1)."""

    data_dir: Path
    host: str = "0.0.0.0"
    port: int = Field(7070, ge=0, le=65535, description="0 picks a free port")
    driver: Literal["libvirt", "simulator"] = "libvirt"
    libvirt_uri: str = "qemu:///system"
    sim_hosts: int = Field(1, ge=1, le=10_000)
    sim_cpus: int = Field(32, ge=1)
    sim_memory_mb: int = Field(131_072, ge=256)
    sim_disk_gb: int = Field(2_000, ge=1)
    sim_cpu_overcommit: float | None = Field(None, description="None: vCPUs unbounded")
    sim_memory_overcommit: float = 1.0
    sim_latency: float = Field(
        0.0, ge=0, description="seconds every simulated VM and disk operation takes"
    )
    sim_fetch_images: bool = Field(False, description="simulated hosts download images for real")
    fault_injection: bool = Field(False, description="enable /v1/debug/faults (tests only)")
    tls: bool = True
    heartbeat_interval: float = Field(2.0, gt=0)
    pool_report_interval: float = Field(
        30.0, gt=0, description="seconds between two measurements of the storage pools"
    )
    inline_wait: float = Field(0.5, ge=0)
    shutdown_grace: float = Field(10.0, ge=0)
    log_level: str = "info"
