"""Segments on real Open vSwitch instances with real packets: three "hosts" (A, B, C), each a
network namespace with its own OVS (userspace datapath). Their underlay interfaces meet on a
Linux bridge in a fourth namespace (the underlay network); A and B also have an uplink, a veth
between them (the physical network of flat and VLAN segments). Namespace guests sit on each
host's ``br-int`` with their segment's local tag, all in one IP subnet, so that anything
crossing a segment boundary would show (ARP broadcasts included).

Segments: VXLAN 5100 (A, B, C), VXLAN 5200 (A, B), VLAN 100 and flat (A, B). The local tags
differ per host and collide on purpose with wire ids (A's VNI 5100 and B's VLAN 100 both use
local tag 100), so a local tag leaking onto the wire would cross segments."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from corral.agent.network.links import Links
from corral.agent.network.ovs import Ovs
from corral.agent.network.segment_plan import tunnel_port_name
from corral.agent.network.segments import SegmentManager, bridge_port_tags, vm_port_tag
from corral.api.errors import NetworkError
from corral.api.host_network import HostNetwork, Segment, Underlay, Uplink
from corral.api.networks import SegmentType
from corral.netflows.firewall import FwPort, compile_ports
from tests.support.ovs import (
    NsGuest,
    NsOvs,
    add_host_guest,
    add_netns,
    del_netns,
    ns_host,
    ns_run,
    ovs_available,
    remove_guest,
    veth_between,
)

pytestmark = [
    pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed"),
    pytest.mark.asyncio(loop_scope="module"),
]

HOSTS = ("a", "b", "c")
TUNNEL_IP = {"a": "10.203.0.1", "b": "10.203.0.2", "c": "10.203.0.3"}
VX1, VX2, VLAN, FLAT = "pg-vx5100", "pg-vx5200", "pg-vlan100", "pg-flat"
LOCAL_TAGS = {
    "a": {VX1: 100, VX2: 2, VLAN: 3, FLAT: 4},
    "b": {VX1: 11, VX2: 12, VLAN: 100, FLAT: 14},
    "c": {VX1: 21},
}
MEMBERS = {VX1: ("a", "b", "c"), VX2: ("a", "b"), VLAN: ("a", "b"), FLAT: ("a", "b")}
SEGMENT = {VX1: (SegmentType.vxlan, 5100), VX2: (SegmentType.vxlan, 5200),
           VLAN: (SegmentType.vlan, 100), FLAT: (SegmentType.flat, None)}  # fmt: skip
# guests: (host, port group, last octet); every guest is 10.204.0.<octet>/24
GUESTS = {
    "vxa": ("a", VX1, 1), "vxb": ("b", VX1, 2), "vxc": ("c", VX1, 3),
    "vx2a": ("a", VX2, 11), "vx2b": ("b", VX2, 12),
    "vla": ("a", VLAN, 21), "vlb": ("b", VLAN, 22),
    "fla": ("a", FLAT, 31), "flb": ("b", FLAT, 32),
}  # fmt: skip
BROADCAST = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
    "s.sendto(b'x', (sys.argv[1], 9))\n"
)


def host_network(host: str, without: frozenset[tuple[str, str]] = frozenset()) -> HostNetwork:
    """Host ``host``'s network; ``without``: (port group, host) memberships left out."""
    segments = []
    for pg, tag in LOCAL_TAGS[host].items():
        if (pg, host) in without:
            continue
        type_, sid = SEGMENT[pg]
        remotes = [TUNNEL_IP[h] for h in MEMBERS[pg] if h != host and (pg, h) not in without]
        segments.append(Segment(port_group_id=pg, type=type_, segment_id=sid, local_tag=tag,
                                remotes=remotes if type_ == SegmentType.vxlan else []))  # fmt: skip
    return HostNetwork(
        underlay=Underlay(interface="ul0", address=f"{TUNNEL_IP[host]}/24"),
        uplink=Uplink(interface="up0") if host != "c" else None,
        segments=segments,
    )


@dataclass
class Lab:
    hosts: dict[str, NsOvs]
    managers: dict[str, SegmentManager]
    guests: dict[str, NsGuest]

    async def apply_all(self, without: frozenset[tuple[str, str]] = frozenset()) -> None:
        for h in HOSTS:
            await self.managers[h].apply(host_network(h, without))

    def ofports(self, host: str) -> dict[str, int]:
        out = self.hosts[host].vsctl("--format=csv", "--no-headings", "--columns=name,ofport",
                                     "list", "Interface")  # fmt: skip
        return {n: int(p) for n, p in (line.split(",") for line in out.split())}


def rx(guest: NsGuest) -> int:
    return int(guest.sh("cat", "/sys/class/net/eth0/statistics/rx_packets", check=True).stdout)


def pings(guest: NsGuest, address: str) -> bool:
    return guest.ping(address, count=2)


SNIFF = (
    "import select,socket,sys\n"
    "s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(('eth0', 0))\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    " r,_,_=select.select([s, sys.stdin],[],[])\n"
    " if sys.stdin in r: break\n"
    " data, addr = s.recvfrom(65535)\n"
    " if addr[2] != socket.PACKET_OUTGOING: print(data[6:12].hex(':'), data[12:14].hex())\n"
)


@contextlib.contextmanager
def sniffing(guests: dict[str, NsGuest]) -> Iterator[dict[str, list[str]]]:
    """Every frame each guest receives meanwhile, as "source-MAC ethertype" lines (filled in
    on exit)."""
    seen: dict[str, list[str]] = {}
    procs = {
        n: subprocess.Popen(
            ["ip", "netns", "exec", g.ns, sys.executable, "-c", SNIFF],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, g in guests.items()
    }
    try:
        for p in procs.values():
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield seen
        time.sleep(0.3)
    finally:
        for n, p in procs.items():
            out, _ = p.communicate("", timeout=10)
            seen[n] = out.split("\n")[:-1]


def probe(lab: Lab, source: str) -> dict[str, list[str]]:
    """Ping (in parallel, 1 s) every guest outside ``source``'s segment from ``source``; the
    frames from ``source``'s segment those guests received meanwhile (should be none: not
    even ARP)."""
    seg = GUESTS[source][1]
    outside = {n: g for n, g in lab.guests.items() if GUESTS[n][1] != seg}
    mates = {g.mac for n, g in lab.guests.items() if GUESTS[n][1] == seg}
    with sniffing(outside) as seen:
        procs = [
            subprocess.Popen(
                ["ip", "netns", "exec", lab.guests[source].ns, "ping", "-c1", "-w1", g.ip],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for g in outside.values()
        ]
        codes = [p.wait(timeout=10) for p in procs]
    assert all(c != 0 for c in codes), f"{source} reached another segment"
    return {n: [f for f in frames if f.split()[0] in mates] for n, frames in seen.items()}


@contextlib.contextmanager
def physical_network(name: str) -> Iterator[str]:
    """A namespace with a Linux bridge ``ul`` (the underlay switch)."""
    add_netns(name)
    try:
        ns_run(name, "ip", "link", "add", "ul", "type", "bridge")
        ns_run(name, "ip", "link", "set", "ul", "up")
        yield name
    finally:
        del_netns(name)


def _remove_all(guests: dict[str, NsGuest]) -> None:
    for g in guests.values():
        remove_guest(g)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    root: Path = tmp_path_factory.mktemp("segments")
    tag = uuid.uuid4().hex[:6]
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(physical_network(f"sgn-{tag}"))
        hosts = {h: stack.enter_context(ns_host(root / h, f"sg{h}-{tag}")) for h in HOSTS}
        for h, host in hosts.items():
            veth_between((host.netns, "ul0"), (net, f"ul-{h}"))
            ns_run(net, "ip", "link", "set", f"ul-{h}", "master", "ul")
        veth_between((hosts["a"].netns, "up0"), (hosts["b"].netns, "up0"))
        managers = {
            h: SegmentManager(Ovs(db=host.db, env=host.env), Links(netns=host.netns))
            for h, host in hosts.items()
        }
        for h in HOSTS:
            result = await managers[h].apply(host_network(h))
            assert result.changed and not result.warnings
            # br-int is fail-mode=secure: its flows belong to the firewall pipeline; here, NORMAL
            await managers[h].ovs.replace_flows("br-int", ["priority=0,actions=NORMAL"])
        guests: dict[str, NsGuest] = {}
        stack.callback(_remove_all, guests)
        for name, (h, pg, octet) in GUESTS.items():
            mtu = 1450 if SEGMENT[pg][0] == SegmentType.vxlan else None
            mac = f"02:00:0a:cc:00:{octet:02x}"
            tag_ = vm_port_tag(host_network(h), pg)
            guests[name] = add_host_guest(hosts[h], "br-int", f"10.204.0.{octet}/24", mac,
                                          tag=tag_, mtu=mtu)  # fmt: skip
        yield Lab(hosts, managers, guests)


async def test_same_segment_connects_across_hosts(lab: Lab) -> None:
    g = lab.guests
    assert pings(g["vxa"], g["vxb"].ip)
    assert pings(g["vxa"], g["vxc"].ip)
    assert pings(g["vxb"], g["vxc"].ip)
    assert pings(g["vx2a"], g["vx2b"].ip)
    assert pings(g["vla"], g["vlb"].ip)
    assert pings(g["fla"], g["flb"].ip)
    # the wire carries VLAN 100 for the VLAN segment, untagged frames for flat
    fdb = lab.hosts["a"].appctl("fdb/show", "br-uplink")
    assert " 100  02:00:0a:cc:00:16" in fdb and "   0  02:00:0a:cc:00:20" in fdb


async def test_segments_are_isolated_not_even_arp(lab: Lab) -> None:
    for source in ("vxa", "vx2a", "vla", "fla", "vxc", "vlb"):
        received = probe(lab, source)
        assert received == {n: [] for n in received}, f"from {source}: {received}"


async def test_broadcast_reaches_each_host_once(lab: Lab) -> None:
    """Split horizon (protected tunnel ports): with three hosts in a full mesh, a broadcast is
    delivered once per guest and never forwarded from one tunnel into another (a loop)."""
    g = lab.guests
    with sniffing({n: g[n] for n in ("vxb", "vxc")}) as seen:
        g["vxa"].sh(sys.executable, "-c", BROADCAST, "10.204.0.255", check=True)
        time.sleep(0.5)
    frames = {n: [f for f in seen[n] if f.startswith(g["vxa"].mac)] for n in seen}
    assert frames == {"vxb": [f"{g['vxa'].mac} 0800"], "vxc": [f"{g['vxa'].mac} 0800"]}


async def test_apply_twice_changes_nothing(lab: Lab) -> None:
    ofports = {h: lab.ofports(h) for h in HOSTS}
    for h in HOSTS:
        result = await lab.managers[h].apply(host_network(h))
        assert not result.changed, result
        assert lab.ofports(h) == ofports[h]
    assert pings(lab.guests["vxa"], lab.guests["vxb"].ip)


async def test_removing_segments_and_remotes(lab: Lab) -> None:
    g, ma = lab.guests, lab.managers["a"]
    try:
        gone = frozenset({(VX2, "a"), (VX2, "b")})
        result_a = await ma.apply(host_network("a", gone))
        assert result_a.removed == (tunnel_port_name(5200, TUNNEL_IP["b"]),)
        result_b = await lab.managers["b"].apply(host_network("b", gone))
        assert result_b.removed == (tunnel_port_name(5200, TUNNEL_IP["a"]),)
        assert not pings(g["vx2a"], g["vx2b"].ip)
        # host C leaves VNI 5100 on A's side only: A's tunnel to C goes, A <-> B stays
        result = await ma.apply(host_network("a", gone | {(VX1, "c")}))
        assert result.removed == (tunnel_port_name(5100, TUNNEL_IP["c"]),)
        assert not pings(g["vxa"], g["vxc"].ip)
        assert pings(g["vxa"], g["vxb"].ip)
        # and the flat segment: its patch pair goes, the uplink stays
        result = await ma.apply(host_network("a", gone | {(VX1, "c"), (FLAT, "a")}))
        assert result.removed == ("pi-flat", "pp-flat")
        assert not pings(g["fla"], g["flb"].ip)
        assert pings(g["vla"], g["vlb"].ip)
    finally:
        await lab.apply_all()
    assert pings(g["vx2a"], g["vx2b"].ip)
    assert pings(g["fla"], g["flb"].ip)


async def test_a_port_ovs_cannot_open_is_an_error(lab: Lab) -> None:
    mc = lab.managers["c"]
    broken = host_network("c").model_copy(update={"uplink": Uplink(interface="nosuch0")})
    try:
        with pytest.raises(NetworkError) as err:
            await mc.apply(broken)
        assert "nosuch0" in err.value.context["ports"]
    finally:
        result = await mc.apply(host_network("c"))
    assert result.removed == ("nosuch0",)
    assert pings(lab.guests["vxc"], lab.guests["vxa"].ip)


async def test_underlay_mtu_request(lab: Lab) -> None:
    c, mc = lab.hosts["c"], lab.managers["c"]
    base = host_network("c")
    assert base.underlay is not None
    try:
        bigger = base.model_copy(
            update={"underlay": base.underlay.model_copy(update={"mtu": 1550})}
        )
        assert (await mc.apply(bigger)).updated == ("ul0",)
        assert "mtu 1550 " in c.sh("ip", "link", "show", "ul0").stdout
        assert not (await mc.apply(bigger)).changed
    finally:
        back = base.model_copy(update={"underlay": base.underlay.model_copy(update={"mtu": 1500})})
        await mc.apply(back)
    assert "mtu 1500 " in c.sh("ip", "link", "show", "ul0").stdout
    assert pings(lab.guests["vxc"], lab.guests["vxa"].ip)


async def test_tunnel_ip_on_the_underlay_interface_is_refused(lab: Lab) -> None:
    c = lab.hosts["c"]
    c.sh("ip", "addr", "add", "10.203.0.3/24", "dev", "ul0")
    try:
        with pytest.raises(NetworkError, match="must be on br-phy"):
            await lab.managers["c"].apply(host_network("c"))
    finally:
        c.sh("ip", "addr", "del", "10.203.0.3/24", "dev", "ul0")


def _firewall(lab: Lab) -> list[str]:
    """Host A's guests behind the firewall pipeline (allow everything: the segments only)."""
    ports = []
    for name, (h, pg, octet) in GUESTS.items():
        if h == "a":
            guest = lab.guests[name]
            ofport = lab.ofports("a")[guest.peer]
            ports.append(FwPort(ofport=ofport, mac=guest.mac, ips=(guest.ip,), zone=octet,
                                cookie=octet, ingress_default="allow",
                                tag=LOCAL_TAGS["a"][pg]))  # fmt: skip
    trunks: dict[int | str, int] = dict(bridge_port_tags(host_network("a")))
    return compile_ports(ports, trunks)


async def test_segments_under_the_firewall_pipeline(lab: Lab) -> None:
    """With the NIC firewall's flows on A's br-int (table 3 ends in NORMAL) segments still
    connect across hosts and stay isolated for broadcasts."""
    ovs_a = lab.managers["a"].ovs
    try:
        await ovs_a.replace_flows("br-int", _firewall(lab))
        g = lab.guests
        for a, b in (("vxa", "vxb"), ("vx2a", "vx2b"), ("vla", "vlb"), ("fla", "flb")):
            for ga, gb in ((g[a], g[b]), (g[b], g[a])):
                ga.sh("ip", "neigh", "flush", "all")
                assert pings(ga, gb.ip), (a, b)
        for source in ("vxa", "vla", "fla"):
            received = probe(lab, source)
            assert received == {n: [] for n in received}, f"from {source}: {received}"
    finally:
        await ovs_a.replace_flows("br-int", ["priority=0,actions=NORMAL"])


async def test_firewall_delivery_respects_segments(lab: Lab) -> None:
    ovs_a = lab.managers["a"].ovs
    g = lab.guests
    vla, fla = g["vla"], g["fla"]
    try:
        await ovs_a.replace_flows("br-int", _firewall(lab))
        vla.sh("ip", "neigh", "replace", fla.ip, "lladdr", fla.mac, "dev", "eth0", check=True)
        before = rx(fla)
        vla.sh("ping", "-c2", "-i0.2", "-w1", fla.ip)
        time.sleep(0.2)
        assert rx(fla) == before, "a VLAN segment's guest reached the flat segment's guest"
    finally:
        vla.sh("ip", "neigh", "del", fla.ip, "dev", "eth0")
        await ovs_a.replace_flows("br-int", ["priority=0,actions=NORMAL"])
