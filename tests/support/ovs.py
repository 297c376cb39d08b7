"""A private Open vSwitch instance for tests (its own database, sockets and pid files under one
directory; the userspace datapath), and network-namespace "guests" plugged into its bridges
through veth pairs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def ovs_available() -> bool:
    return SCHEMA.is_file() and all(
        shutil.which(t) for t in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl")
    )


def run(*args: str, check: bool = True, input: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        list(args), check=check, capture_output=True, text=True, input=input, env=env,
        timeout=timeout,
    )  # fmt: skip


@dataclass
class Ovs:
    """One OVS instance; ``vsctl``/``ofctl``/``appctl`` talk to it."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        d = self.root
        return {**os.environ, "OVS_RUNDIR": str(d / "run"), "OVS_LOGDIR": str(d / "log"),
                "OVS_DBDIR": str(d / "db"), "OVS_SYSCONFDIR": str(d / "etc")}  # fmt: skip

    @property
    def db(self) -> str:
        return f"unix:{self.root / 'run' / 'db.sock'}"

    def vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", f"--db={self.db}", "--timeout=20", *args, env=self.env).stdout

    def ofctl(self, *args: str, input: str | None = None) -> str:
        return run("ovs-ofctl", *args, input=input, env=self.env).stdout

    def appctl(self, *args: str) -> str:
        pid = (self.root / "run" / "ovs-vswitchd.pid").read_text().strip()
        ctl = self.root / "run" / f"ovs-vswitchd.{pid}.ctl"
        return run("ovs-appctl", "-t", str(ctl), *args, env=self.env).stdout

    def start(self) -> None:
        for sub in ("run", "log", "db", "etc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "db" / "conf.db"
        run("ovsdb-tool", "create", str(conf), str(SCHEMA), env=self.env)
        run("ovsdb-server", str(conf), f"--remote=punix:{self.root / 'run' / 'db.sock'}",
            f"--pidfile={self.root / 'run' / 'ovsdb-server.pid'}", "--detach",
            f"--log-file={self.root / 'log' / 'ovsdb-server.log'}", env=self.env)  # fmt: skip
        run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init", env=self.env)
        run("ovs-vswitchd", self.db, f"--pidfile={self.root / 'run' / 'ovs-vswitchd.pid'}",
            "--detach", f"--log-file={self.root / 'log' / 'ovs-vswitchd.log'}",
            env=self.env)  # fmt: skip

    def stop(self) -> None:
        for br in self.vsctl("list-br").split():
            run("ovs-vsctl", f"--db={self.db}", "--timeout=10", "del-br", br, check=False,
                env=self.env)  # fmt: skip
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.root / "run" / f"{name}.pid"
            if pidfile.exists():
                run("kill", pidfile.read_text().strip(), check=False)


@dataclass
class NsGuest:
    """A network namespace with one interface ``eth0`` (veth) whose peer is on an OVS bridge."""

    ns: str
    ip: str
    mac: str
    peer: str

    def sh(self, *args: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return run("ip", "netns", "exec", self.ns, *args, check=check, timeout=timeout)

    def ping(self, address: str, count: int = 2, source: str | None = None) -> bool:
        extra = ["-I", source] if source else []
        r = self.sh("ping", "-c", str(count), "-i", "0.2", "-W", "1", *extra, address)
        return r.returncode == 0


def remove_guest(guest: NsGuest) -> None:
    run("ip", "link", "del", guest.peer, check=False)
    run("ip", "netns", "del", guest.ns, check=False)


# --- "Hosts" in network namespaces: an OVS instance per namespace, guests plugged into it. ---


def ns_run(netns: str, *args: str, check: bool = True,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``args`` inside the network namespace ``netns``."""
    return run("ip", "netns", "exec", netns, *args, check=check, timeout=timeout)


def add_netns(name: str) -> None:
    """A new network namespace with its loopback up and IPv6 off (no spontaneous ND/MLD
    traffic: interface packet counters then count only what a test sends)."""
    run("ip", "netns", "add", name)
    ns_run(name, "ip", "link", "set", "lo", "up")
    ns_run(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    ns_run(name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")


def del_netns(name: str) -> None:
    run("ip", "netns", "del", name, check=False)


@dataclass
class NsOvs(Ovs):
    """An OVS instance whose daemons run inside the network namespace ``netns`` (a "host").

    The tools talk to it from anywhere: its database and control sockets are Unix sockets in
    ``root`` (filesystem paths are not namespaced), so ``vsctl``/``ofctl``/``appctl`` and the
    agent's driver need no prefix; only the daemons (and ``ip`` commands for the host's
    interfaces) run under ``ip netns exec``."""

    netns: str = ""

    def sh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command inside the host's namespace."""
        return ns_run(self.netns, *args, check=check)

    def start(self) -> None:
        for sub in ("run", "log", "db", "etc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        conf = self.root / "db" / "conf.db"
        ns = ("ip", "netns", "exec", self.netns)
        run("ovsdb-tool", "create", str(conf), str(SCHEMA), env=self.env)
        run(*ns, "ovsdb-server", str(conf), f"--remote=punix:{self.root / 'run' / 'db.sock'}",
            f"--pidfile={self.root / 'run' / 'ovsdb-server.pid'}", "--detach",
            f"--log-file={self.root / 'log' / 'ovsdb-server.log'}", env=self.env)  # fmt: skip
        run("ovs-vsctl", f"--db={self.db}", "--no-wait", "init", env=self.env)
        run(*ns, "ovs-vswitchd", self.db, f"--pidfile={self.root / 'run' / 'ovs-vswitchd.pid'}",
            "--detach", f"--log-file={self.root / 'log' / 'ovs-vswitchd.log'}",
            env=self.env)  # fmt: skip

    def stop(self) -> None:
        """Bridges deleted, then both daemons killed (by their pid files); never raises."""
        brs = run("ovs-vsctl", f"--db={self.db}", "--timeout=5", "list-br", check=False,
                  env=self.env).stdout.split()  # fmt: skip
        for br in brs:
            run("ovs-vsctl", f"--db={self.db}", "--timeout=10", "del-br", br, check=False,
                env=self.env)  # fmt: skip
        for name in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.root / "run" / f"{name}.pid"
            if pidfile.exists():
                run("kill", pidfile.read_text().strip(), check=False)

    def rx_packets(self, ifname: str) -> int:
        return int(self.sh("cat", f"/sys/class/net/{ifname}/statistics/rx_packets").stdout)


@contextmanager
def ns_host(root: Path, netns: str) -> Iterator[NsOvs]:
    """A "host": the namespace ``netns`` (created here) with its own OVS instance. On exit the
    daemons are stopped (bridges deleted first) and the namespace removed."""
    add_netns(netns)
    ovs = NsOvs(root, netns=netns)
    try:
        ovs.start()
        yield ovs
    finally:
        try:
            ovs.stop()
        finally:
            del_netns(netns)


def veth_between(a: tuple[str, str], b: tuple[str, str]) -> None:
    """A veth pair: interface ``a[1]`` in namespace ``a[0]``, ``b[1]`` in ``b[0]``, both up
    with transmit checksum offload off (the userspace datapath needs full checksums)."""
    tmp = f"cv-{uuid.uuid4().hex[:8]}"
    run("ip", "link", "add", tmp, "type", "veth", "peer", "name", b[1], "netns", b[0])
    run("ip", "link", "set", tmp, "netns", a[0], "name", a[1])
    for ns, ifname in (a, b):
        ns_run(ns, "ethtool", "-K", ifname, "tx", "off")
        ns_run(ns, "ip", "link", "set", ifname, "up")


def add_host_guest(host: NsOvs, bridge: str, cidr: str, mac: str, *, tag: int | None = None,
                   mtu: int | None = None) -> NsGuest:  # fmt: skip
    """A namespace guest plugged into ``bridge`` of a host in a namespace (access port with
    ``tag``; ``mtu`` on both ends of its veth). ``remove_guest`` removes it (deleting the
    guest's namespace destroys the veth pair)."""
    name = uuid.uuid4().hex[:6]
    ns, peer = f"cg-{name}", f"cgp-{name}"
    add_netns(ns)
    veth_between((host.netns, peer), (ns, "eth0"))
    guest = NsGuest(ns, cidr.split("/")[0], mac, peer)
    guest.sh("ip", "link", "set", "eth0", "address", mac, check=True)
    guest.sh("ip", "addr", "add", cidr, "dev", "eth0", check=True)
    if mtu is not None:
        guest.sh("ip", "link", "set", "eth0", "mtu", str(mtu), check=True)
        host.sh("ip", "link", "set", peer, "mtu", str(mtu))
    port = ["--", "set", "port", peer, f"tag={tag}"] if tag is not None else []
    host.vsctl("add-port", bridge, peer, *port)
    return guest


def add_dhcp_guest(host: NsOvs, bridge: str, mac: str, *, tag: int | None = None) -> NsGuest:
    """A namespace guest with ``mac`` and no address (a DHCP client) plugged into ``bridge``
    of a host in a namespace (access port with ``tag``). Unlike ``add_host_guest`` its
    namespace keeps IPv6 (for DHCPv6), without duplicate address detection so that its
    link-local address is usable at once. ``remove_guest`` removes it."""
    name = uuid.uuid4().hex[:6]
    ns, peer = f"cg-{name}", f"cgp-{name}"
    run("ip", "netns", "add", ns)
    ns_run(ns, "ip", "link", "set", "lo", "up")
    run("ip", "-n", host.netns, "link", "add", peer, "type", "veth", "peer", "name", "eth0",
        "netns", ns)  # fmt: skip
    guest = NsGuest(ns, "", mac, peer)
    for cmd in (("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"),
                ("ip", "link", "set", "eth0", "address", mac),
                ("ethtool", "-K", "eth0", "tx", "off"), ("ip", "link", "set", "eth0", "up")):  # fmt: skip
        guest.sh(*cmd, check=True)
    host.sh("ethtool", "-K", peer, "tx", "off")
    host.sh("ip", "link", "set", peer, "up")
    port = ["--", "set", "port", peer, f"tag={tag}"] if tag is not None else []
    host.vsctl("add-port", bridge, peer, *port)
    return guest


UDHCPC_SCRIPT = """#!/bin/sh
if [ "$1" = bound ]; then
  for v in ip mask router dns domain hostname lease mtu serverid; do
    eval "echo LEASE $v=\\$$v"
  done
fi
exit 0
"""


def dhcp_request(guest: NsGuest, tries: int = 3, wait_s: int = 1) -> dict[str, str] | None:
    """One DHCPv4 exchange from the guest's eth0 (``busybox udhcpc``, the address is not
    configured): the lease's ``ip mask router dns domain hostname lease mtu serverid`` (empty
    when not sent), or None when no server answered within ``tries`` x ``wait_s`` seconds."""
    fd, script = tempfile.mkstemp(prefix="udhcpc-", suffix=".sh")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(UDHCPC_SCRIPT)
        os.chmod(script, 0o755)
        r = guest.sh("busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-O", "mtu",
                     "-t", str(tries), "-T", str(wait_s), "-s", script,
                     timeout=tries * wait_s + 15)  # fmt: skip
    finally:
        os.unlink(script)
    if r.returncode != 0:
        return None
    lease = {}
    for line in r.stdout.splitlines():
        if line.startswith("LEASE "):
            key, _, value = line[6:].partition("=")
            lease[key] = value.strip()
    return lease or None


DHCP6_CLIENT = r"""
import os, socket, struct, sys
iface, mac, tries, wait = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3]), float(sys.argv[4])
duid = struct.pack("!HH", 3, 1) + mac
def opt(code, data): return struct.pack("!HH", code, len(data)) + data
def parse(data):
    out, i = {}, 0
    while i + 4 <= len(data):
        c, n = struct.unpack("!HH", data[i:i + 4]); out.setdefault(c, []).append(data[i + 4:i + 4 + n]); i += 4 + n
    return out
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("::", 546)); s.settimeout(wait)
scope = socket.if_nametoindex(iface)
def exchange(mtype, extra, want):
    for _ in range(tries):
        xid = os.urandom(3)
        s.sendto(bytes([mtype]) + xid + opt(1, duid) + opt(8, b"\0\0") + extra, ("ff02::1:2", 547, 0, scope))
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if data[0] == want and data[1:4] == xid: return parse(data[4:])
        except TimeoutError: pass
    return None
oro = opt(6, struct.pack("!HH", 23, 24))
adv = exchange(1, opt(3, struct.pack("!III", 1, 0, 0)) + oro, 2)
if not adv or 3 not in adv or 5 not in parse(adv[3][0][12:]): sys.exit(1)
rep = exchange(3, opt(2, adv[2][0]) + opt(3, adv[3][0]) + oro, 7)
if not rep or 3 not in rep or 5 not in parse(rep[3][0][12:]): sys.exit(2)
addr = socket.inet_ntop(socket.AF_INET6, parse(rep[3][0][12:])[5][0][:16])
dns = rep.get(23, [b""])[0]
print("ip=" + addr)
print("dns=" + " ".join(socket.inet_ntop(socket.AF_INET6, dns[i:i + 16]) for i in range(0, len(dns), 16)))
"""


def dhcp6_request(guest: NsGuest, tries: int = 2, wait_s: float = 0.5) -> dict[str, str] | None:
    """One stateful DHCPv6 exchange (Solicit, Advertise, Request, Reply; DUID-LL from the
    guest's MAC, one IA_NA) from the guest's eth0: ``ip`` (the Reply's address) and ``dns``,
    or None without an answer (busybox has no DHCPv6 client)."""
    r = guest.sh(sys.executable, "-c", DHCP6_CLIENT, "eth0", guest.mac, str(tries), str(wait_s),
                 timeout=30)  # fmt: skip
    if r.returncode != 0:
        return None
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


# --- The system instance: the one libvirt's <virtualport type='openvswitch'/> talks to. -------

ENSURE_OVS = Path(__file__).resolve().parents[2] / "scripts" / "ensure-ovs"
SYSTEM_RUNDIR = Path("/var/run/openvswitch")


@dataclass
class SystemOvs(Ovs):
    """The host's own OVS (default database socket; ``scripts/ensure-ovs`` starts it when it
    is not running). libvirt plugs VM taps into its bridges with the system ``ovs-vsctl``.
    ``stop`` does nothing: the instance is shared, a test removes only what it created
    (``system_bridge``, ``remove_guest``, ``forget_qos``)."""

    root: Path = SYSTEM_RUNDIR

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def db(self) -> str:
        return f"unix:{SYSTEM_RUNDIR / 'db.sock'}"

    def appctl(self, *args: str) -> str:
        return run("ovs-appctl", "-t", "ovs-vswitchd", *args).stdout

    def start(self) -> None:
        run(str(ENSURE_OVS))

    def stop(self) -> None:
        pass

    def get(self, table: str, record: str, column: str) -> str:
        """``ovs-vsctl get`` of one column (``external_ids:iface-id`` …), stripped of quotes."""
        return self.vsctl("get", table, record, column).strip().strip('"')

    def forget_qos(self, vm_uuid: str) -> None:
        """Destroy the QoS and Queue rows libvirt created for the domain ``vm_uuid``
        (``external_ids:vm-id``): libvirt 9.0 deletes a VM's port when the VM stops but leaves
        its ``<bandwidth>`` rows in the database."""
        for table in ("qos", "queue"):
            rows = self.vsctl("--bare", "--columns=_uuid", "find", table,
                              f"external_ids:vm-id={vm_uuid}").split()  # fmt: skip
            for row in rows:
                run("ovs-vsctl", f"--db={self.db}", "--timeout=10", "--if-exists", "destroy",
                    table, row, check=False)  # fmt: skip


@contextmanager
def system_bridge(ovs: SystemOvs, name: str, *, flows: str | None = None) -> Iterator[str]:
    """A bridge ``name`` on the system OVS in the userspace datapath (``datapath_type=netdev``),
    removed afterwards. Without ``flows`` it switches by itself (``fail-mode=standalone``, the
    NORMAL action); with ``flows`` (``ovs-ofctl add-flows`` text) it is ``secure`` and has
    exactly those."""
    mode = "standalone" if flows is None else "secure"
    ovs.vsctl("--may-exist", "add-br", name, "--", "set", "bridge", name,
              "datapath_type=netdev", f"fail-mode={mode}")  # fmt: skip
    try:
        if flows is not None:
            ovs.ofctl("del-flows", name)
            ovs.ofctl("add-flows", name, "-", input=flows)
        yield name
    finally:
        run("ovs-vsctl", f"--db={ovs.db}", "--timeout=10", "--if-exists", "del-br", name,
            check=False)  # fmt: skip


def add_system_guest(ovs: SystemOvs, bridge: str, cidr: str, mac: str, *,
                     tag: int | None = None, mtu: int | None = None) -> NsGuest:  # fmt: skip
    """A namespace guest on ``bridge`` of the system OVS (its veth peer in the root namespace,
    an access port with ``tag``; ``mtu`` on both ends; transmit checksum offload off).
    ``remove_guest`` removes it."""
    name = uuid.uuid4().hex[:6]
    ns, peer = f"cg-{name}", f"cgp-{name}"
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
    guest = NsGuest(ns, cidr.split("/")[0], mac, peer)
    for cmd in (("ip", "link", "set", "eth0", "address", mac), ("ip", "addr", "add", cidr, "dev", "eth0"),
                ("ip", "link", "set", "eth0", "up"), ("ip", "link", "set", "lo", "up"),
                ("ethtool", "-K", "eth0", "tx", "off")):  # fmt: skip
        guest.sh(*cmd, check=True)
    run("ethtool", "-K", peer, "tx", "off")
    if mtu is not None:
        guest.sh("ip", "link", "set", "eth0", "mtu", str(mtu), check=True)
        run("ip", "link", "set", peer, "mtu", str(mtu))
    run("ip", "link", "set", peer, "up")
    port = ["--", "set", "port", peer, f"tag={tag}"] if tag is not None else []
    ovs.vsctl("add-port", bridge, peer, *port)
    return guest
