"""``corral agent``: run the host agent (a Typer command the main CLI mounts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import ValidationError

from corral.agent.settings import AgentSettings
from corral.util import aio
from corral.util.redact import install_log_redaction


def _settings(**values: object) -> AgentSettings:
    return AgentSettings.model_validate(values)


def agent_command(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="where the agent keeps its state")
    ] = Path("/var/lib/corral/agent"),
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", help="port to listen on (0: any)")] = 7070,
    driver: Annotated[
        str, typer.Option("--driver", help="compute driver: libvirt or simulator")
    ] = "libvirt",
    libvirt_uri: Annotated[str, typer.Option("--libvirt-uri")] = "qemu:///system",
    sim_hosts: Annotated[
        int, typer.Option("--sim-hosts", help="simulated hosts, served under /sim/<i>")
    ] = 1,
    sim_cpus: Annotated[int, typer.Option("--sim-cpus")] = 32,
    sim_memory_mb: Annotated[int, typer.Option("--sim-memory-mb")] = 131_072,
    sim_disk_gb: Annotated[int, typer.Option("--sim-disk-gb")] = 2_000,
    sim_latency: Annotated[
        float,
        typer.Option("--sim-latency", help="seconds every simulated VM/disk operation takes"),
    ] = 0.0,
    http: Annotated[bool, typer.Option("--http", help="plain HTTP instead of TLS")] = False,
    fault_injection: Annotated[
        bool, typer.Option("--fault-injection", help="enable /v1/debug/faults (tests only)")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    network_bridge: Annotated[
        str, typer.Option("--network-bridge", help="the Open vSwitch integration bridge")
    ] = "br-int",
    ovs_db: Annotated[
        str | None,
        typer.Option("--ovs-db", help="the OVSDB socket (default: the system's)"),
    ] = None,
    underlay_interface: Annotated[
        str | None,
        typer.Option("--underlay-interface", help="the NIC on the VXLAN underlay network"),
    ] = None,
    underlay_address: Annotated[
        str | None,
        typer.Option(
            "--underlay-address",
            help="the VXLAN tunnel IP with its prefix (e.g. 10.0.0.5/24), put on the underlay"
            " bridge; simulated host i gets this address + i",
        ),
    ] = None,
    underlay_bridge: Annotated[
        str, typer.Option("--underlay-bridge", help="the bridge holding the underlay NIC")
    ] = "br-phy",
    underlay_mtu: Annotated[
        int | None,
        typer.Option("--underlay-mtu", help="MTU asked for the underlay NIC (e.g. 1550)"),
    ] = None,
    network_refresh_interval: Annotated[
        float,
        typer.Option(
            "--network-refresh-interval",
            help="seconds between two checks that the host's network is applied",
        ),
    ] = 10.0,
) -> None:
    """Run the Corral host agent until interrupted. Running VMs survive agent restarts."""
    if driver not in ("libvirt", "simulator"):
        raise typer.BadParameter("must be libvirt or simulator", param_hint="--driver")
    drv: Literal["libvirt", "simulator"] = "libvirt" if driver == "libvirt" else "simulator"
    try:
        settings = _settings(
            data_dir=data_dir,
            host=host,
            port=port,
            driver=drv,
            libvirt_uri=libvirt_uri,
            sim_hosts=sim_hosts,
            sim_cpus=sim_cpus,
            sim_memory_mb=sim_memory_mb,
            sim_disk_gb=sim_disk_gb,
            sim_latency=sim_latency,
            tls=not http,
            fault_injection=fault_injection,
            log_level=log_level,
            network_bridge=network_bridge,
            ovs_db=ovs_db,
            underlay_interface=underlay_interface,
            underlay_address=underlay_address,
            underlay_bridge=underlay_bridge,
            underlay_mtu=underlay_mtu,
            network_refresh_interval=network_refresh_interval,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(problems) from exc
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()  # after basicConfig: its handler gets the filter too
    from corral.agent.app import serve

    aio.run(serve(settings))
