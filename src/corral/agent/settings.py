"""Settings of the agent process (command line flags map one to one onto these fields)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, IPvAnyInterface, model_validator

from corral.api.host_network import Underlay

_IFNAME = r"^[A-Za-z0-9_.-]{1,15}$"


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
    network_bridge: str = Field("br-int", pattern=_IFNAME, description="the integration bridge")
    ovs_db: str | None = Field(
        None,
        description="the OVSDB socket (a path or ``unix:``/``tcp:``/``ssl:`` address; None: the "
        "system default); a socket path's directory is also where ovs-ofctl finds the bridges",
    )
    underlay_interface: str | None = Field(
        None, pattern=_IFNAME, description="the NIC on the VXLAN underlay network (None: none)"
    )
    underlay_address: IPvAnyInterface | None = Field(
        None, description="the tunnel IP with its prefix (on the underlay bridge)"
    )
    underlay_bridge: str = Field("br-phy", pattern=_IFNAME)
    underlay_mtu: int | None = Field(None, ge=1280, le=9216)
    network_refresh_interval: float = Field(
        10.0, gt=0, description="seconds between two checks that the host's network is applied"
    )

    @model_validator(mode="after")
    def _underlay_complete(self) -> Self:
        if (self.underlay_interface is None) != (self.underlay_address is None):
            raise ValueError("give both underlay_interface and underlay_address, or neither")
        return self

    def underlay(self, index: int = 0) -> Underlay | None:
        """The VXLAN underlay (None without one). ``index``: simulated host ``index`` gets the
        configured address plus ``index`` (same prefix), so simulated hosts' tunnel IPs
        differ."""
        if self.underlay_interface is None or self.underlay_address is None:
            return None
        address = ipaddress.ip_interface(
            f"{self.underlay_address.ip + index}/{self.underlay_address.network.prefixlen}"
        )
        return Underlay(
            interface=self.underlay_interface,
            address=address,
            bridge=self.underlay_bridge,
            mtu=self.underlay_mtu,
        )

    def ovs_env(self) -> dict[str, str]:
        """Environment for the Open vSwitch tools: ``OVS_RUNDIR`` = the directory of a socket
        path given as ``ovs_db`` (nothing otherwise: the system default)."""
        db = self.ovs_db
        if db is None or (":" in db and not db.startswith("unix:")):
            return {}
        return {"OVS_RUNDIR": str(Path(db.removeprefix("unix:")).parent)}

    def ovs_db_address(self) -> str | None:
        """``ovs_db`` as ``ovs-vsctl --db`` takes it (a bare path as ``unix:<path>``)."""
        db = self.ovs_db
        if db is None or ":" in db:
            return db
        return f"unix:{db}"
