"""Composition root of the agent: the ONLY place that picks real or simulated drivers.

``build_runtimes`` makes the host runtimes for the settings, ``start`` serves them with uvicorn as
a task of the caller's event loop (``corral up`` runs server and agent in one loop) and returns an
``AgentHandle``; ``serve`` runs until SIGINT/SIGTERM. Drivers are imported lazily so that the agent
package works without the libvirt bindings (and the simulator does not load libvirt).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from corral.agent.attach import HostIdentity
from corral.agent.faults import FaultPlan
from corral.agent.http import create_agent_app
from corral.agent.runtime import HostRuntime
from corral.agent.settings import AgentSettings
from corral.util.ca import host_server_name
from corral.util.redact import install_log_redaction
from corral.util.tls import SniContext, ensure_self_signed, fingerprint

log = logging.getLogger(__name__)


def _libvirt_runtime(settings: AgentSettings, common: dict[str, Any]) -> HostRuntime:
    from corral.agent.compute.libvirt import LibvirtDriver
    from corral.agent.network.ovs import Ovs
    from corral.agent.network.ovs_plane import OvsNetworkPlane
    from corral.agent.storage.dirpool import DirPool
    from corral.agent.storage.volumes import real_backends

    pool = DirPool(settings.data_dir / "pool")
    compute = LibvirtDriver(
        console_dir=settings.data_dir / "console",
        disk_root=pool.root,
        uri=settings.libvirt_uri,
        config_drive_dir=settings.data_dir / "configdrive",
    )

    async def traversable() -> None:
        # QEMU runs as libvirt-qemu and must traverse the data dir to reach the pool's disks.
        mode = settings.data_dir.stat().st_mode
        if mode & 0o011 != 0o011:
            settings.data_dir.chmod((mode | 0o011) & 0o7777)

    return HostRuntime(
        name="agent",
        data_dir=settings.data_dir,
        compute=compute,
        volumes=pool,
        backends=real_backends(),
        startup=[traversable, pool.prepare],
        network=OvsNetworkPlane(
            data_dir=settings.data_dir,
            ovs=Ovs(db=settings.ovs_db_address(), env=settings.ovs_env()),
            bridge=settings.network_bridge,
            underlay=settings.underlay(),
        ),
        **common,
    )


def _simulated_runtime(settings: AgentSettings, index: int, common: dict[str, Any]) -> HostRuntime:
    from corral.agent.compute.simulator import SimHost, SimLatencies, simulated_host
    from corral.agent.network.plane import SimulatedNetworkPlane
    from corral.agent.storage.volumes import simulated_backends

    data_dir = settings.data_dir / "sim" / str(index)
    image_cache = None
    if settings.sim_fetch_images:
        image_cache = data_dir / "images"
        image_cache.mkdir(parents=True, exist_ok=True)
    host = SimHost(
        name=f"sim-{index}",
        cpus=settings.sim_cpus,
        memory_mb=settings.sim_memory_mb,
        disk_gb=settings.sim_disk_gb,
        cpu_overcommit=settings.sim_cpu_overcommit,
        memory_overcommit=settings.sim_memory_overcommit,
    )
    faults = FaultPlan()
    latencies = SimLatencies(
        **{f.name: settings.sim_latency for f in dataclasses.fields(SimLatencies)}
    )
    compute, pool = simulated_host(
        host, faults=faults, latencies=latencies, image_cache=image_cache
    )
    return HostRuntime(
        name=host.name,
        data_dir=data_dir,
        compute=compute,
        volumes=pool,
        backends=simulated_backends(
            host_name=host.name, faults=faults, capacity_gb=settings.sim_disk_gb
        ),
        faults=faults,
        network=SimulatedNetworkPlane(
            bridge=settings.network_bridge, underlay=settings.underlay(index), data_dir=data_dir
        ),
        **common,
    )


def build_runtimes(settings: AgentSettings) -> dict[str, HostRuntime]:
    """The runtimes to serve, by mount path: ``{"": …}`` for libvirt, ``{"/sim/0": …, …}`` for the
    simulator (host i keeps its state in ``<data_dir>/sim/<i>``)."""
    common: dict[str, Any] = {
        "fault_injection": settings.fault_injection,
        "heartbeat_interval": settings.heartbeat_interval,
        "pool_report_interval": settings.pool_report_interval,
        "inline_wait": settings.inline_wait,
        "shutdown_grace": settings.shutdown_grace,
        "network_refresh_interval": settings.network_refresh_interval,
    }
    if settings.driver == "libvirt":
        return {"": _libvirt_runtime(settings, common)}
    return {f"/sim/{i}": _simulated_runtime(settings, i, common) for i in range(settings.sim_hosts)}


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class AgentHandle:
    """A running agent: its runtimes, where it listens, and how to stop it."""

    runtimes: dict[str, HostRuntime]
    scheme: str
    host: str
    port: int
    cert_pem: str | None
    _server: _EmbeddedServer = field(repr=False)
    _task: asyncio.Task[None] = field(repr=False)
    tls: SniContext | None = field(default=None, repr=False)
    """The listener's certificates: ``cert_pem`` (bootstrap) by default, each enrolled host's for
    its SNI name (``corral.util.ca.host_server_name``)."""

    def url(self, i: int = 0) -> str:
        """Base URL of the i-th runtime (``https://127.0.0.1:7070/sim/3``; no prefix for libvirt)."""
        prefix = list(self.runtimes)[i].rstrip("/")
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}{prefix}"

    async def wait(self) -> None:
        """Until the HTTP server exits (``stop`` or a crash)."""
        await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stop serving HTTP, then stop every runtime (running VMs keep running)."""
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
        await asyncio.gather(*(rt.stop() for rt in self.runtimes.values()))


async def start(
    settings: AgentSettings, *, runtimes: dict[str, HostRuntime] | None = None
) -> AgentHandle:
    """Start the runtimes (``build_runtimes`` unless given) and serve them; returns once the port
    accepts connections. ``settings.port = 0`` picks a free port (see ``AgentHandle.port``).
    Secrets are scrubbed from every log record from then on (``install_log_redaction``)."""
    install_log_redaction()
    runtimes = runtimes if runtimes is not None else build_runtimes(settings)
    results = await asyncio.gather(
        *(rt.start() for rt in runtimes.values()), return_exceptions=True
    )
    if errors := [r for r in results if isinstance(r, BaseException)]:
        await asyncio.gather(*(rt.stop() for rt in runtimes.values()))
        raise errors[0]
    try:
        return await _serve_http(settings, runtimes)
    except BaseException:
        await asyncio.gather(*(rt.stop() for rt in runtimes.values()))
        raise


def _listener_tls(settings: AgentSettings, runtimes: dict[str, HostRuntime]) -> SniContext:
    """The bootstrap certificate (self-signed; what enrollment pins) as the default, plus each
    enrolled host's CA-issued one for its SNI name, kept current as hosts enroll and detach."""
    cert, key = settings.data_dir / "tls" / "agent.crt", settings.data_dir / "tls" / "agent.key"
    ensure_self_signed(cert, key, common_name=socket.gethostname())
    sni = SniContext(cert, key)

    def changed(host_id: str, identity: HostIdentity | None) -> None:
        if identity is None:
            sni.remove(host_server_name(host_id))
        else:
            sni.add(host_server_name(host_id), identity.cert_path, identity.key_path)

    for rt in runtimes.values():
        if rt.attachment.identity is not None:
            changed(rt.attachment.identity.host_id, rt.attachment.identity)
        rt.attachment.on_identity = changed
    log.info(
        "agent bootstrap certificate SHA-256 fingerprint (corral host add --fingerprint): %s",
        fingerprint(cert.read_text()),
    )
    return sni


async def _serve_http(settings: AgentSettings, runtimes: dict[str, HostRuntime]) -> AgentHandle:
    cert: Path | None = None
    key: Path | None = None
    cert_pem = None
    sni: SniContext | None = None
    if settings.tls:
        sni = _listener_tls(settings, runtimes)
        cert, key = settings.data_dir / "tls" / "agent.crt", settings.data_dir / "tls" / "agent.key"
        cert_pem = cert.read_text()
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    # Accepted sockets inherit this. uvicorn only sets it on sockets it binds itself; without it
    # every keep-alive request waits ~40 ms (Nagle + delayed ACK).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    config = uvicorn.Config(
        create_agent_app(runtimes),
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_context_factory=(lambda _config, _default: sni.context) if sni is not None else None,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="agent http")
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn only has a flag)
        await asyncio.sleep(0.01)
    if task.done():
        sock.close()
        task.result()
        raise RuntimeError("agent HTTP server exited at start-up")
    port = int(sock.getsockname()[1])
    log.info("agent serving %d host(s) on %s:%d", len(runtimes), settings.host, port)
    scheme = "https" if settings.tls else "http"
    return AgentHandle(runtimes, scheme, settings.host, port, cert_pem, server, task, sni)


async def serve(settings: AgentSettings) -> None:
    """Run the agent until SIGINT or SIGTERM, then shut down cleanly (VMs keep running)."""
    handle = await start(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        waiter = asyncio.create_task(stopping.wait())
        await asyncio.wait({waiter, handle._task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await handle.stop()
