"""Distributed DHCP/DNS: one dnsmasq per port group on each host, serving only that host's VMs.

The server computes, for every port group with VMs on a host, a ``DhcpSegment`` (its subnets,
options and the MAC → address/hostname entries of the host's NICs); ``DhcpManager.apply`` makes
the host run exactly those services, idempotently.

How one segment is arranged (names derive from a hash of the manager's ``run_dir`` and the port
group id, ``<h>`` below, so two managers on one machine never collide):

- a network namespace ``cdhcp-<h>`` of its own, so that the server's addresses never touch the
  host's routing table and segments with overlapping CIDRs live side by side;
- a veth pair: ``cdh-<h>`` in the host's namespace is a *system* port of the OVS bridge (access
  port with the segment's VLAN tag, or untagged), its peer ``dhcp0`` inside the namespace holds
  the server's address in each subnet (transmit checksum offload off on both ends: the userspace
  datapath forwards what it reads, and DHCP clients check UDP checksums). A veth, not an OVS
  *internal* port: in the userspace datapath an internal port is a tap device that OVS keeps
  addressing by name in its own namespace; moved into another namespace it passes packets but
  OVS loses it (ethtool/MTU errors on every reconfiguration, ``admin_state`` down) and after an
  ``ovs-vswitchd`` restart OVS creates a fresh tap in its own namespace while the moved one
  stays orphaned (no traffic at all). A veth survives an ``ovs-vswitchd`` restart.
  The OVS interface carries ``external_ids`` ``corral-dhcp-owner`` (the manager) and
  ``corral-dhcp-port-group`` so that flow computation can find it and stale ports are swept;
- ``dnsmasq --keep-in-foreground`` started inside the namespace (``ip netns exec``) in a session
  of its own, with every setting in ``<run_dir>/<h>/dnsmasq.conf``: a ``static`` range per subnet
  and ``dhcp-ignore=tag:!known`` (only the listed MACs get an answer), router, DNS servers, MTU
  and domain options, ``no-resolv``/``no-hosts``, ``bind-interfaces`` on ``dhcp0``. The MAC
  entries live in ``hosts`` (``--dhcp-hostsfile``): changing them rewrites the file and sends
  SIGHUP, never a restart. A lease left by a removed or moved entry is dropped at once with
  ``dhcp_release``/``dhcp_release6`` (package ``dnsmasq-utils``) so its address can go to
  another MAC (dnsmasq refuses to hand out an address leased to another client).
  IPv4 and stateful DHCPv6 (a ``static`` range: fixed addresses only). DHCPv6 has no router
  option: the guests' default route and the RA ``M`` flag that makes them ask come from the
  router, not from here.

dnsmasq is not a child the agent must keep: an agent that restarts finds its processes by their
pid files (the process must be dnsmasq with this segment's ``--conf-file``) and keeps them when
the configuration they were started with (a hash in ``dnsmasq.conf.running``) is still the
wanted one; a dead one is restarted by the next ``apply`` (or ``reconcile``). Under systemd the
agent's unit needs ``KillMode=process`` for them to outlive an agent restart.

dnsmasq drops its privileges to ``user`` (``nobody``) after start and re-reads ``hosts`` as that
user on SIGHUP: ``run_dir`` and all its parents must be searchable by it (checked).

Every file is written atomically (temporary file, then rename). Failures raise ``NetworkError``;
``apply`` converges every segment it can and then raises one error naming the failed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.agent.network.ovs import Ovs
from corral.agent.storage.tools import ToolResult, run_tool
from corral.api.errors import CorralError, NetworkError
from corral.api.host_network import (
    DhcpSegment,
    IPAddress,
    IPNetwork,
)

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
NS_PORT = "dhcp0"
NETNS_DIR = Path("/run/netns")
OWNER_KEY = "corral-dhcp-owner"
PORT_GROUP_KEY = "corral-dhcp-port-group"

# --------------------------------------------------------------------------------------------
# Names and files


@dataclass(frozen=True)
class SegmentNames:
    """The host-level names of one segment's service (``short``: 8 hex digits)."""

    short: str
    netns: str
    host_port: str
    ns_port: str = NS_PORT


def segment_names(owner: str, port_group_id: str) -> SegmentNames:
    """Names for ``port_group_id`` under manager ``owner`` (stable: same inputs, same names)."""
    short = hashlib.sha256(f"{owner}\0{port_group_id}".encode()).hexdigest()[:8]
    return SegmentNames(short=short, netns=f"cdhcp-{short}", host_port=f"cdh-{short}")


@dataclass(frozen=True)
class SegmentPaths:
    """The files of one segment, all in ``dir``."""

    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / "segment.json"

    @property
    def conf(self) -> Path:
        return self.dir / "dnsmasq.conf"

    @property
    def running(self) -> Path:
        return self.dir / "dnsmasq.conf.running"

    @property
    def hosts(self) -> Path:
        return self.dir / "hosts"

    @property
    def addn_hosts(self) -> Path:
        return self.dir / "addn-hosts"

    @property
    def leases(self) -> Path:
        return self.dir / "leases"

    @property
    def pid(self) -> Path:
        return self.dir / "dnsmasq.pid"

    @property
    def log(self) -> Path:
        return self.dir / "dnsmasq.log"

    @property
    def err(self) -> Path:
        return self.dir / "dnsmasq.err"


# --------------------------------------------------------------------------------------------
# Rendering (pure)


def _netmask_or_prefix(net: IPNetwork) -> str:
    return str(net.netmask) if net.version == 4 else str(net.prefixlen)


def _option_values(addresses: Iterable[IPAddress]) -> str:
    return "".join(f",[{a}]" if a.version == 6 else f",{a}" for a in addresses)


def dns_upstreams(segment: DhcpSegment) -> list[IPAddress]:
    """The subnets' DNS servers, deduplicated in order (dnsmasq's upstreams with ``serve_dns``)."""
    out: list[IPAddress] = []
    for s in segment.subnets:
        out += [d for d in s.dns_servers if d not in out]
    return out


def render_config(
    segment: DhcpSegment,
    paths: SegmentPaths,
    *,
    interface: str = NS_PORT,
    user: str = "nobody",
    log_dhcp: bool = False,
) -> str:
    """dnsmasq's configuration file for ``segment`` (everything but the MAC entries, which are
    in ``render_hosts``'s file). Deterministic: the same input renders the same text, so a
    changed text means dnsmasq must restart. Subnet ``i`` is tagged ``s<i>``; options are sent
    per subnet; an option without value (no gateway, no DNS server) stops dnsmasq from sending
    its own address instead."""
    lines = [
        f"# Corral DHCP for port group {segment.port_group_id}: generated by the agent, do not edit",
        *(
            f"# server {s.server_address}/{s.cidr.prefixlen} on {interface}"
            for s in segment.subnets
        ),
        "no-resolv",
        "no-hosts",
        "bind-interfaces",
        f"interface={interface}",
        "except-interface=lo",
        f"user={user}",
        f"pid-file={paths.pid}",
        f"log-facility={paths.log}",
        f"dhcp-leasefile={paths.leases}",
        f"dhcp-hostsfile={paths.hosts}",
        "dhcp-ignore=tag:!known",
        *(["log-dhcp"] if log_dhcp else ["quiet-dhcp", "quiet-dhcp6"]),
    ]
    if segment.domain:
        lines.append(f"domain={segment.domain}")
    if segment.serve_dns:
        lines += [f"addn-hosts={paths.addn_hosts}", "domain-needed"]
        if segment.domain:
            lines.append(f"local=/{segment.domain}/")
        lines += [f"server={up}" for up in dns_upstreams(segment)]
    else:
        lines.append("port=0")
    for i, s in enumerate(segment.subnets):
        tag = f"s{i}"
        net = s.cidr
        lines.append(
            f"dhcp-range=set:{tag},{net.network_address},static,{_netmask_or_prefix(net)},"
            f"{segment.lease_time}"
        )
        dns = [s.server_address] if segment.serve_dns else list(s.dns_servers)
        if net.version == 4:
            router = [s.gateway] if s.gateway is not None else []
            lines.append(f"dhcp-option=tag:{tag},option:router{_option_values(router)}")
            lines.append(f"dhcp-option=tag:{tag},option:dns-server{_option_values(dns)}")
            if segment.mtu is not None:
                lines.append(f"dhcp-option=tag:{tag},option:mtu,{segment.mtu}")
        else:
            lines.append(f"dhcp-option=tag:{tag},option6:dns-server{_option_values(dns)}")
    return "\n".join(lines) + "\n"


def render_hosts(segment: DhcpSegment) -> str:
    """The ``--dhcp-hostsfile``: ``mac,ipv4,[ipv6],hostname`` per host, sorted by MAC."""
    lines = []
    for mac, host in sorted(segment.hosts.items()):
        fields = [mac]
        if host.ipv4 is not None:
            fields.append(str(host.ipv4))
        if host.ipv6 is not None:
            fields.append(f"[{host.ipv6}]")
        if host.hostname:
            fields.append(host.hostname)
        lines.append(",".join(fields))
    return "".join(f"{line}\n" for line in lines)


def render_addn_hosts(segment: DhcpSegment) -> str:
    """The ``--addn-hosts`` file (DNS names of the hosts, with ``serve_dns``): ``address
    [fqdn] name``, sorted by MAC, then IPv4 before IPv6."""
    lines = []
    for _, host in sorted(segment.hosts.items()):
        if not host.hostname:
            continue
        names = [f"{host.hostname}.{segment.domain}"] if segment.domain else []
        names.append(host.hostname)
        for address in (host.ipv4, host.ipv6):
            if address is not None:
                lines.append(" ".join([str(address), *names]))
    return "".join(f"{line}\n" for line in lines)


# --------------------------------------------------------------------------------------------
# Leases (pure)


@dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file. IPv4: ``mac`` and ``client_id`` (None: ``*``);
    IPv6: ``iaid``, ``client_id`` (the DUID) and the server's DUID of the file."""

    address: IPAddress
    mac: str | None = None
    client_id: str | None = None
    iaid: int | None = None
    server_duid: str | None = None
    line: str = ""


def parse_leases(text: str) -> list[Lease]:
    """The leases of a dnsmasq lease file (unparsable lines are skipped)."""
    leases: list[Lease] = []
    server_duid: str | None = None
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) == 2 and parts[0] == "duid":
            server_duid = parts[1]
            continue
        if len(parts) < 5:
            continue
        try:
            address = ipaddress.ip_address(parts[2])
        except ValueError:
            continue
        client_id = None if parts[4] == "*" else parts[4]
        if address.version == 4:
            leases.append(Lease(address, mac=parts[1].lower(), client_id=client_id, line=raw))
        else:
            iaid = parts[1].removeprefix("T")
            if not iaid.isdigit():
                continue
            leases.append(Lease(address, client_id=client_id, iaid=int(iaid),
                                server_duid=server_duid, line=raw))  # fmt: skip
    return leases


def duid_mac(duid: str | None) -> str | None:
    """The Ethernet MAC inside a DUID-LLT or DUID-LL (colon-separated hex), else None."""
    if not duid:
        return None
    try:
        raw = bytes.fromhex(duid.replace(":", ""))
    except ValueError:
        return None
    if len(raw) == 14 and raw[:4] == b"\x00\x01\x00\x01":  # LLT, Ethernet: type, hw, time, mac
        mac = raw[8:]
    elif len(raw) == 10 and raw[:4] == b"\x00\x03\x00\x01":  # LL, Ethernet
        mac = raw[4:]
    else:
        return None
    return ":".join(f"{b:02x}" for b in mac)


def stale_leases(leases: Sequence[Lease], segment: DhcpSegment) -> list[Lease]:
    """The leases ``segment`` no longer backs. IPv4: the MAC is gone or has another address.
    IPv6 (a lease names a DUID, not a MAC): the address is no host's any more, or the DUID
    carries the MAC of another of the segment's hosts (the address moved)."""
    v6_owner: dict[IPAddress, str] = {
        h.ipv6: mac for mac, h in segment.hosts.items() if h.ipv6 is not None
    }
    stale = []
    for lease in leases:
        if lease.address.version == 4:
            host = segment.hosts.get(lease.mac or "")
            if host is None or host.ipv4 != lease.address:
                stale.append(lease)
        else:
            owner = v6_owner.get(lease.address)
            mac = duid_mac(lease.client_id)
            if owner is None or (mac is not None and mac != owner and mac in segment.hosts):
                stale.append(lease)
    return stale


def prune_leases(text: str, segment: DhcpSegment) -> str:
    """The lease file without ``stale_leases`` (for a dnsmasq about to start: it loads the file
    and would otherwise keep refusing an address leased to a MAC that no longer has it)."""
    drop = {lease.line for lease in stale_leases(parse_leases(text), segment)}
    return "".join(f"{line}\n" for line in text.splitlines() if line not in drop)


# --------------------------------------------------------------------------------------------
# Files and processes (synchronous helpers, run in threads)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """``path`` holds ``text`` (written to a temporary file, then renamed); False if it did
    already."""
    data = text.encode()
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == data:
            return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _searchable_by(path: Path, user: str) -> Path | None:
    """The first of ``path`` and its parents that ``user`` cannot search (None: all fine)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return path
    if pw.pw_uid == 0:
        return None
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == pw.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return p
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _reap(pid: int) -> bool:
    """True if ``pid``, a child this manager spawned, has exited (now reaped). Never called
    for other pids: reaping a child of asyncio's would steal its exit status."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _is_dnsmasq(pid: int, conf: Path) -> bool:
    """``pid`` is alive (not a zombie) and is dnsmasq run with ``--conf-file=<conf>``."""
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    argv = _cmdline(pid)
    return bool(argv) and os.path.basename(argv[0]) == "dnsmasq" and f"--conf-file={conf}" in argv


def _find_dnsmasq(paths: SegmentPaths) -> int | None:
    """The pid of this segment's running dnsmasq: from its pid file, else by scanning /proc
    (a lost pid file must not make us start a second one that cannot bind)."""
    text = _read(paths.pid)
    if text and text.strip().isdigit() and _is_dnsmasq(int(text.strip()), paths.conf):
        return int(text.strip())
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _is_dnsmasq(int(entry.name), paths.conf):
            return int(entry.name)
    return None


def _spawn(argv: Sequence[str], err: Path) -> int:
    """Start ``argv`` in a new session, stdin from /dev/null, stdout/stderr to ``err``."""
    return os.posix_spawn(
        argv[0],
        list(argv),
        dict(os.environ),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(err), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ],
        setsid=True,
    )


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise NetworkError(f"{name} is not installed", tool=name)
    return found


# --------------------------------------------------------------------------------------------
# The manager


class DhcpManager:
    """Converges a host's DHCP services to a list of ``DhcpSegment`` (see the module docstring).

    ``run_dir``: this manager's state (one directory per segment; created 0755). ``ovs``: the
    host's Open vSwitch. ``host_netns``: the network namespace OVS and its system ports live in
    (None: the agent's own; tests run a private OVS in a namespace). ``user``: what dnsmasq
    runs as after start. ``log_dhcp``: dnsmasq logs every DHCP exchange in detail (its log is
    ``<segment dir>/dnsmasq.log``; otherwise only problems). One ``apply`` at a time (a lock).
    """

    def __init__(
        self,
        run_dir: Path,
        ovs: Ovs,
        *,
        host_netns: str | None = None,
        user: str = "nobody",
        log_dhcp: bool = False,
        start_timeout: float = 5.0,
    ) -> None:
        self.run_dir = Path(os.path.abspath(run_dir))
        self.ovs = ovs
        self.host_netns = host_netns
        self.user = user
        self.log_dhcp = log_dhcp
        self.start_timeout = start_timeout
        self.owner = hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:8]
        self._lock = asyncio.Lock()
        self._wanted: list[DhcpSegment] | None = None
        self._children: set[int] = set()  # dnsmasq processes this instance spawned

    def _reap_children(self) -> None:
        """Collect the exit status of our dnsmasq processes that ended (no zombies)."""
        for pid in list(self._children):
            if _reap(pid):
                self._children.discard(pid)

    # ---- names

    def names(self, port_group_id: str) -> SegmentNames:
        """The netns/port names of ``port_group_id``'s service on this host."""
        return segment_names(self.owner, port_group_id)

    def paths(self, port_group_id: str) -> SegmentPaths:
        return SegmentPaths(self.run_dir / self.names(port_group_id).short)

    # ---- public operations

    async def apply(self, segments: Sequence[DhcpSegment]) -> None:
        """Make the host serve exactly ``segments``: each converged (namespace, veth, OVS port,
        addresses, files, a running dnsmasq; host entries reloaded by SIGHUP, stale leases
        released; a restart only when the configuration file changed, the interface was
        recreated or dnsmasq was not running), every other segment of this manager removed.
        Idempotent: applying the same list again runs no new process and changes no file.
        ``NetworkError`` after trying every segment if some failed (``context.failed``: port
        group id → message), or at once if the list is invalid (two entries for one port group).
        """
        ids = [s.port_group_id for s in segments]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise NetworkError("a port group is listed twice", port_groups=dupes)
        shorts = [self.names(i).short for i in ids]
        if len(set(shorts)) != len(shorts):  # a 32-bit hash collision: refuse, never mix them
            raise NetworkError("two port groups hash to the same name", port_groups=ids)
        async with self._lock:
            self._wanted = list(segments)
            await self._apply_locked(list(segments))

    async def reconcile(self) -> None:
        """Apply the last applied list again (restarts a dead dnsmasq, recreates a deleted
        namespace or port). Nothing applied yet: nothing to do."""
        async with self._lock:
            if self._wanted is not None:
                await self._apply_locked(self._wanted)

    async def stop_all(self) -> None:
        """Remove every service of this manager: dnsmasq stopped, OVS ports, namespaces and
        files removed (the host leaves service). A plain agent restart must not call it: the
        services keep answering while the agent is away and the next ``apply`` adopts them."""
        async with self._lock:
            self._wanted = []
            await self._apply_locked([])

    async def running(self) -> dict[str, int]:
        """Port group id → pid of its running dnsmasq, for every recorded segment."""
        out: dict[str, int] = {}
        for seg in await asyncio.to_thread(self._recorded):
            pid = await asyncio.to_thread(_find_dnsmasq, self.paths(seg.port_group_id))
            if pid is not None:
                out[seg.port_group_id] = pid
        return out

    # ---- convergence

    async def _apply_locked(self, segments: list[DhcpSegment]) -> None:
        self._reap_children()
        bad = await asyncio.to_thread(self._prepare_run_dir)
        if bad is not None:
            raise NetworkError(
                f"dnsmasq runs as {self.user} and could not read its files: {bad} is not "
                f"searchable by {self.user}",
                path=str(bad),
                user=self.user,
            )
        failed: dict[str, str] = {}
        wanted = {s.port_group_id for s in segments}
        for old in await asyncio.to_thread(self._recorded):
            if old.port_group_id not in wanted:
                try:
                    await self._remove(old)
                except NetworkError as exc:
                    failed[old.port_group_id] = exc.message
        for seg in segments:
            try:
                await self._converge(seg)
            except NetworkError as exc:
                log.warning("DHCP for port group %s: %s", seg.port_group_id, exc.message)
                failed[seg.port_group_id] = exc.message
        # OVS ports of ours that no record explains (a lost run_dir)
        keep = {self.names(s.port_group_id).host_port for s in segments}
        try:
            for port in await self.ovs.find_ports(corral_dhcp_owner=self.owner):
                if port not in keep:
                    await self.ovs.remove_port(port)
        except NetworkError as exc:
            failed["(ports)"] = exc.message
        if failed:
            raise NetworkError(
                f"DHCP could not be set up for {len(failed)} port group(s)", failed=failed
            )

    async def _converge(self, seg: DhcpSegment) -> None:
        names, paths = self.names(seg.port_group_id), self.paths(seg.port_group_id)
        conf = render_config(seg, paths, interface=names.ns_port, user=self.user,
                             log_dhcp=self.log_dhcp)  # fmt: skip
        hosts = render_hosts(seg)
        addn = render_addn_hosts(seg) if seg.serve_dns else None
        old_bridge = await asyncio.to_thread(self._write_record, paths, seg)
        if old_bridge not in (None, seg.bridge):  # moved: --may-exist add-port would refuse
            await self.ovs.remove_port(names.host_port)

        recreated = await self._ensure_link(seg, names)
        await self._configure_namespace(seg, names)
        if recreated:  # OVS would keep reading the old device's socket
            await self.ovs.delete_port(seg.bridge, names.host_port)
        await self.ovs.ensure_port(
            seg.bridge,
            names.host_port,
            tag=seg.tag,
            external_ids={OWNER_KEY: self.owner, PORT_GROUP_KEY: seg.port_group_id},
        )

        hosts_changed = await asyncio.to_thread(self._write_files, paths, conf, hosts, addn)
        conf_hash = hashlib.sha256(conf.encode()).hexdigest()
        pid = await asyncio.to_thread(_find_dnsmasq, paths)
        running_hash = (await asyncio.to_thread(_read, paths.running) or "").strip()
        if pid is not None and not recreated and running_hash == conf_hash:
            if hosts_changed:
                _kill(pid, signal.SIGHUP)  # re-reads hosts (and addn-hosts)
            await self._release_stale(seg, names, paths)
            return
        if pid is not None:
            await self._stop_pid(pid, paths)
        await asyncio.to_thread(self._prune_lease_file, paths, seg)
        await self._start(names, paths)
        await asyncio.to_thread(_write_atomic, paths.running, conf_hash + "\n")

    async def _remove(self, seg: DhcpSegment) -> None:
        names, paths = self.names(seg.port_group_id), self.paths(seg.port_group_id)
        pid = await asyncio.to_thread(_find_dnsmasq, paths)
        if pid is not None:
            await self._stop_pid(pid, paths)
        await self.ovs.delete_port(seg.bridge, names.host_port)
        if await asyncio.to_thread(self._netns_exists, names.netns):
            await self._run("ip", "netns", "del", names.netns)
        if await self._link_exists(self.host_netns, names.host_port):
            await self._run(*self._ip_host("link", "del", names.host_port), check=False)
        await asyncio.to_thread(shutil.rmtree, paths.dir, True)

    # ---- namespace and veth

    def _ip_host(self, *args: str) -> list[str]:
        return ["ip", *(("-n", self.host_netns) if self.host_netns else ()), *args]

    def _exec_host(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.host_netns, *argv] if self.host_netns else list(argv)

    async def _link_exists(self, netns: str | None, link: str) -> bool:
        ns = ("-n", netns) if netns else ()
        result = await self._run("ip", *ns, "-j", "link", "show", "dev", link, check=False)
        return result.returncode == 0

    @staticmethod
    def _netns_exists(name: str) -> bool:
        return (NETNS_DIR / name).exists()

    async def _ensure_link(self, seg: DhcpSegment, names: SegmentNames) -> bool:
        """The namespace and the veth pair exist; True if anything was (re)created."""
        created = False
        if not await asyncio.to_thread(self._netns_exists, names.netns):
            await self._run("ip", "netns", "add", names.netns)
            created = True
        host_ok = await self._link_exists(self.host_netns, names.host_port)
        ns_ok = not created and await self._link_exists(names.netns, names.ns_port)
        if host_ok and ns_ok:
            return created
        if host_ok:
            await self._run(*self._ip_host("link", "del", names.host_port))
        if ns_ok:
            await self._run("ip", "-n", names.netns, "link", "del", names.ns_port)
        await self._run(*self._ip_host("link", "add", names.host_port, "type", "veth", "peer",
                                       "name", names.ns_port, "netns", names.netns))  # fmt: skip
        in_ns = ("ip", "netns", "exec", names.netns)
        for argv in (
            self._exec_host("ethtool", "-K", names.host_port, "tx", "off"),
            [*in_ns, "ethtool", "-K", names.ns_port, "tx", "off"],
        ):
            await self._run(*argv)
        # the link-local address (DHCPv6 answers come from it) usable at once; no IPv6: no-op
        dad = f"net.ipv6.conf.{names.ns_port}.accept_dad=0"
        await self._run(*in_ns, "sysctl", "-qw", dad, check=False)
        return True

    async def _configure_namespace(self, seg: DhcpSegment, names: SegmentNames) -> None:
        """Links up with the MTU, exactly the server addresses on the interface, and (with
        ``serve_dns``) default routes through the gateways, in one ``ip -batch`` per side."""
        mtu = ("mtu", str(seg.mtu)) if seg.mtu is not None else ()
        await self._run(*self._ip_host("link", "set", names.host_port, *mtu, "up"))
        ns, dev = names.netns, names.ns_port
        addrs = json.loads(
            (await self._run("ip", "-n", ns, "-j", "addr", "show", "dev", dev)).stdout
        )
        have = {
            f"{a['local']}/{a['prefixlen']}"
            for link in addrs
            for a in link.get("addr_info", [])
            if a.get("scope") == "global"
        }
        want = {f"{s.server_address}/{s.cidr.prefixlen}": s for s in seg.subnets}
        batch = ["link set lo up", " ".join(["link", "set", dev, *mtu, "up"])]
        batch += [f"addr del {a} dev {dev}" for a in sorted(have - set(want))]
        batch += [
            f"addr replace {a} dev {dev}" + (" nodad" if s.cidr.version == 6 else "")
            for a, s in sorted(want.items())
        ]
        for family in ("-4", "-6"):
            version = 4 if family == "-4" else 6
            gws = [s.gateway for s in seg.subnets if s.cidr.version == version and s.gateway]
            routes = json.loads(
                (await self._run("ip", "-n", ns, "-j", family, "route", "show", "default")).stdout
                or "[]"
            )
            if seg.serve_dns and gws:
                batch.append(f"route replace default via {gws[0]} dev {dev}")
            elif routes:
                batch.append(f"route del default dev {dev}")
        await self._run("ip", "-n", ns, "-batch", "-", stdin="\n".join(batch) + "\n")

    # ---- dnsmasq

    async def _start(self, names: SegmentNames, paths: SegmentPaths) -> int:
        """Start dnsmasq and wait until it wrote its pid file (it has bound its sockets then);
        ``NetworkError`` with its error output if it exits or is not up within the timeout."""
        argv = [_tool("ip"), "netns", "exec", names.netns, _tool("dnsmasq"),
                f"--conf-file={paths.conf}", "--keep-in-foreground"]  # fmt: skip
        await asyncio.to_thread(_unlink, paths.pid)
        pid = await asyncio.to_thread(_spawn, argv, paths.err)
        self._children.add(pid)
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._reap_children()
            if pid not in self._children:
                err = (await asyncio.to_thread(_read, paths.err) or "").strip()
                raise NetworkError(f"dnsmasq did not start: {err or 'no error output'}",
                                   port=names.host_port, stderr=err[-2000:])  # fmt: skip
            text = (await asyncio.to_thread(_read, paths.pid) or "").strip()
            if text == str(pid):
                log.info("dnsmasq for %s started (pid %d)", names.netns, pid)
                return pid
            if time.monotonic() > deadline:
                await self._stop_pid(pid, paths)
                raise NetworkError(
                    f"dnsmasq did not come up within {self.start_timeout:g} s",
                    port=names.host_port,
                )
            await asyncio.sleep(0.02)

    async def _stop_pid(self, pid: int, paths: SegmentPaths) -> None:
        """SIGTERM, then SIGKILL after 3 s; returns once the process is gone."""
        _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while await asyncio.to_thread(_is_dnsmasq, pid, paths.conf):
            if time.monotonic() > deadline:
                _kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 3.0
            await asyncio.sleep(0.02)
        self._reap_children()

    async def _release_stale(
        self, seg: DhcpSegment, names: SegmentNames, paths: SegmentPaths
    ) -> None:
        """Tell the running dnsmasq to drop every lease the segment no longer backs."""
        text = await asyncio.to_thread(_read, paths.leases)
        stale = stale_leases(parse_leases(text or ""), seg)
        if not stale:
            return
        if shutil.which("dhcp_release") is None:
            log.warning("dhcp_release is not installed (dnsmasq-utils): %d stale lease(s) of "
                        "%s stay until they expire", len(stale), seg.port_group_id)  # fmt: skip
            return
        exec_ns = ("ip", "netns", "exec", names.netns)
        for lease in stale:
            if lease.address.version == 4:
                argv = [
                    *exec_ns,
                    "dhcp_release",
                    names.ns_port,
                    str(lease.address),
                    lease.mac or "",
                ]
                if lease.client_id:
                    argv.append(lease.client_id)
            elif lease.client_id and lease.server_duid and lease.iaid is not None:
                argv = [*exec_ns, "dhcp_release6", "--iface", names.ns_port,
                        "--ip", str(lease.address), "--client-id", lease.client_id,
                        "--server-id", lease.server_duid, "--iaid", str(lease.iaid)]  # fmt: skip
            else:
                continue
            await self._run(*argv)

    # ---- files

    def _prepare_run_dir(self) -> Path | None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o755)
        return _searchable_by(self.run_dir, self.user)

    def _recorded(self) -> list[DhcpSegment]:
        """The segments this manager has set up (their records), whatever process did it."""
        out: list[DhcpSegment] = []
        if not self.run_dir.is_dir():
            return out
        for entry in sorted(self.run_dir.iterdir()):
            text = _read(entry / "segment.json") if entry.is_dir() else None
            if text is None:
                continue
            try:
                out.append(DhcpSegment.model_validate_json(text))
            except ValueError:
                log.warning("unreadable DHCP segment record %s", entry)
        return out

    def _write_record(self, paths: SegmentPaths, seg: DhcpSegment) -> str | None:
        """Record the segment (what to tear down later; without its hosts, so it is rewritten
        only when that changes); returns the bridge of the previous record (None: none)."""
        paths.dir.mkdir(exist_ok=True)
        os.chmod(paths.dir, 0o755)
        old: str | None = None
        text = _read(paths.record)
        if text is not None:
            with contextlib.suppress(ValueError):
                old = DhcpSegment.model_validate_json(text).bridge
        _write_atomic(paths.record, seg.model_copy(update={"hosts": {}}).model_dump_json() + "\n")
        return old

    @staticmethod
    def _write_files(paths: SegmentPaths, conf: str, hosts: str, addn: str | None) -> bool:
        """Write the configuration files; True if the host entries changed."""
        _write_atomic(paths.conf, conf)
        changed = _write_atomic(paths.hosts, hosts)
        if addn is not None:
            changed = _write_atomic(paths.addn_hosts, addn) or changed
        return changed

    @staticmethod
    def _prune_lease_file(paths: SegmentPaths, seg: DhcpSegment) -> None:
        text = _read(paths.leases)
        if text is not None:
            _write_atomic(paths.leases, prune_leases(text, seg))

    # ---- commands

    async def _run(self, *argv: str, stdin: str | None = None, check: bool = True) -> ToolResult:
        try:
            return await run_tool(
                argv,
                timeout=TIMEOUT_S,
                stdin=stdin.encode() if stdin is not None else None,
                check=check,
            )
        except CorralError as exc:
            raise NetworkError(f"{argv[0]} failed: {exc.message}", **exc.context) from exc


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
