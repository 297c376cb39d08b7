"""``corral up``: the management server and a local agent in one process, ready to use.

This is a composition root: the only module besides ``main`` that wires server and agent together.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select

from corral.agent.app import AgentHandle
from corral.agent.app import start as start_agent
from corral.agent.settings import AgentSettings
from corral.api.hosts import HostCreate, HostStatus
from corral.api.zones import ClusterCreate, ZoneCreate
from corral.server.app import ServerHandle
from corral.server.app import start as start_server
from corral.server.db.tables import ClusterRow, HostRow, ZoneRow
from corral.server.services import hosts, inventory
from corral.server.settings import ServerSettings

log = logging.getLogger("corral.up")

DriverChoice = Literal["auto", "libvirt", "simulator"]


def libvirt_reachable(uri: str = "qemu:///system") -> tuple[bool, str]:
    """Whether libvirtd answers at ``uri`` (and libvirt-python is installed), with a reason."""
    try:
        import libvirt
    except ImportError:
        return False, "libvirt-python is not installed"
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return False, f"libvirtd is not reachable at {uri}: {exc.get_error_message()}"
    conn.close()
    return True, ""


@dataclass
class Stack:
    server: ServerHandle
    agent: AgentHandle
    driver: str

    async def stop(self) -> None:
        await self.agent.stop()
        await self.server.stop()


async def _ensure_local_hosts(server: ServerHandle, agent: AgentHandle) -> None:
    """Create the ``default`` zone and cluster and add every local agent host not added yet."""
    svc = server.services
    async with svc.sessionmaker() as s:
        zone = await s.scalar(select(ZoneRow.id).where(ZoneRow.name == "default"))
        cluster = await s.scalar(select(ClusterRow.id).where(ClusterRow.name == "default"))
        known = set(await s.scalars(select(HostRow.url)))
    if zone is None:
        await inventory.create_zone(svc=svc, spec=ZoneCreate(name="default"))
    if cluster is None:
        await inventory.create_cluster(svc=svc, spec=ClusterCreate(name="default", zone="default"))
    ops = []
    for i, runtime in enumerate(agent.runtimes.values()):
        url = agent.url(i)
        if url in known:
            continue
        name = runtime.name if len(agent.runtimes) > 1 else "local"
        ops.append(
            await hosts.add_host(svc=svc, spec=HostCreate(url=url, cluster="default", name=name))
        )
    for op in ops:
        done = await svc.runner.wait(op.id, 60)
        if done.error is not None:
            log.error("could not add local host: %s", done.error.message)
    await _wait_connected(server, [agent.url(i) for i in range(len(agent.runtimes))])


async def _wait_connected(server: ServerHandle, urls: list[str], timeout: float = 30.0) -> None:
    """Wait until the hosts at ``urls`` are ``connected`` (after a restart the server has them
    disconnected until their agent's first heartbeat), so that "Corral is up" is true at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with server.services.sessionmaker() as s:
            statuses = list(await s.scalars(select(HostRow.status).where(HostRow.url.in_(urls))))
        if statuses and all(status == HostStatus.connected for status in statuses):
            return
        if loop.time() > deadline:
            log.warning("local hosts not connected after %.0f s: %s", timeout, statuses)
            return
        await asyncio.sleep(0.1)


async def start_stack(
    *,
    data_dir: Path,
    port: int = 8443,
    agent_port: int = 7070,
    host: str = "0.0.0.0",
    tls: bool = True,
    driver: DriverChoice = "auto",
    sim_hosts: int = 1,
    agent_overrides: dict[str, Any] | None = None,
    server_overrides: dict[str, Any] | None = None,
) -> Stack:
    """Start server + agent, register the local host(s), return when everything is connected."""
    chosen: Literal["libvirt", "simulator"]
    if driver == "auto":
        ok, why = await asyncio.to_thread(libvirt_reachable)
        chosen = "libvirt" if ok else "simulator"
        if not ok:
            log.warning("%s: using the simulator driver", why)
    else:
        chosen = driver
    server = await start_server(
        ServerSettings(data_dir=data_dir, host=host, port=port, tls=tls, **(server_overrides or {}))
    )
    try:
        agent = await start_agent(
            AgentSettings(
                data_dir=data_dir / "agent",
                host="127.0.0.1",
                port=agent_port,
                driver=chosen,
                sim_hosts=sim_hosts,
                tls=tls,
                **(agent_overrides or {}),
            )
        )
    except BaseException:
        await server.stop()
        raise
    stack = Stack(server=server, agent=agent, driver=chosen)
    try:
        await _ensure_local_hosts(server, agent)
    except BaseException:
        await stack.stop()
        raise
    return stack


def untraversable_parent(path: Path) -> Path | None:
    """The first existing directory above ``path`` that other users cannot enter (no ``o+x``), or
    None. QEMU runs as ``libvirt-qemu``: it cannot open VM disks below such a directory."""
    for parent in path.absolute().parents:
        try:
            mode = parent.stat().st_mode
        except OSError:
            continue  # not created yet: mkdir gives it the usual 0755
        if not mode & 0o001:
            return parent
    return None


async def _kvm_usable(stack: Stack) -> bool:
    """What the local libvirt host reported (the agent probes KVM by booting a tiny guest)."""
    async with stack.server.services.sessionmaker() as s:
        facts = await s.scalar(select(HostRow.facts).where(HostRow.name == "local"))
    return bool(facts and facts.get("kvm_usable"))


def say(line: str) -> None:
    """Print one line for the user at once (stdout may be a pipe, which Python buffers)."""
    print(line, flush=True)


async def run_up(**kwargs: Any) -> None:
    """Run the stack until SIGINT/SIGTERM. Running VMs keep running when it stops."""
    stack = await start_stack(**kwargs)
    url = stack.server.url
    # flush: under a supervisor or `| tee` stdout is a pipe, and the user needs these lines now
    say(f"Corral is up: {url}  (driver: {stack.driver}, hosts: {len(stack.agent.runtimes)})")
    if stack.driver == "libvirt" and not await _kvm_usable(stack):
        say(
            "WARNING: KVM does not work on this machine (a probe guest did not run): VMs run under QEMU TCG emulation, much slower"
        )
    data_dir: Path = kwargs["data_dir"]
    if stack.driver == "libvirt" and (closed := untraversable_parent(data_dir / "agent")):
        say(
            f"WARNING: QEMU (user libvirt-qemu) cannot enter {closed}, so it cannot open VM disks in "
            f"{data_dir}: use a data dir under /var/lib, or chmod o+x {closed}"
        )
    if stack.server.admin_password:
        say(f"Admin password (shown once): {stack.server.admin_password}")
    say(f"Log in with: corral login {url} --user admin")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    say("stopping (VMs keep running)…")
    await stack.stop()
