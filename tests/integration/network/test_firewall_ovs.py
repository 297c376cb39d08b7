"""The compiled NIC firewall on a real Open vSwitch (userspace datapath) with real packets between
network-namespace guests: a protected VM (port 10) with a group that allows TCP 8080 from
anywhere and ICMP from one peer only, default ingress deny and egress allow; its own outbound
connections and their replies pass; spoofed source addresses and MACs are dropped; a rule change
(reloading the port's flows) takes effect."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.netflows.firewall import FwGroup, FwPort, FwRule, compile_ports
from tests.support.ovs import (
    NsGuest,
    Ovs,
    add_host_guest,
    ns_host,
    ovs_available,
    remove_guest,
)

pytestmark = pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed")

BR = "br-fw"
VM = ("10.77.0.10/24", "02:00:0a:4d:00:0a", 10)
PEER = ("10.77.0.20/24", "02:00:0a:4d:00:14", 20)
OTHER = ("10.77.0.30/24", "02:00:0a:4d:00:1e", 30)
SERVE = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n"
    "while True:\n c,_=s.accept(); c.sendall(b'ok'); c.close()\n"
)
CONNECT = (
    "import socket,sys\n"
    "try:\n c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
    " print(c.recv(2).decode())\nexcept OSError as e:\n print('fail', e)\n"
)


def fw_port(spec: tuple[str, str, int], groups: tuple[FwGroup, ...] = (), **kw: object) -> FwPort:
    cidr, mac, ofport = spec
    return FwPort(ofport=PORT_NAMES[ofport], mac=mac, ips=(cidr.split("/")[0],), zone=ofport, cookie=ofport,
                  groups=groups, **kw)  # type: ignore[arg-type]  # fmt: skip


PORT_NAMES: dict[int, str] = {}
"""The guests' OVS ports by name (as the controller names ports), by their number here."""


def vm_group(icmp_from: str) -> FwGroup:
    return FwGroup(
        rules=(
            FwRule("ingress", protocol="tcp", port_min=8080),
            FwRule("ingress", protocol="icmp", remotes=(f"{icmp_from}/32",)),
        ),
        intra_group=False,
    )


def load(ovs: Ovs, ports: list[FwPort]) -> None:
    ovs.ofctl("del-flows", BR)
    ovs.ofctl("add-flows", BR, "-", input="\n".join(compile_ports(ports)) + "\n")


def connect(guest: NsGuest, address: str, port: int) -> str:
    return guest.sh(sys.executable, "-c", CONNECT, address, str(port)).stdout.strip()


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Ovs, NsGuest, NsGuest, NsGuest]]:
    root: Path = tmp_path_factory.mktemp("ovs")
    with ns_host(root, f"cfw-{uuid.uuid4().hex[:6]}") as ovs:
        ovs.vsctl("add-br", BR, "--", "set", "bridge", BR, "datapath_type=netdev",
                  "fail-mode=secure")  # fmt: skip
        guests = [add_host_guest(ovs, BR, cidr, mac) for cidr, mac, _ in (VM, PEER, OTHER)]
        for (_, _, number), guest in zip((VM, PEER, OTHER), guests, strict=True):
            PORT_NAMES[number] = guest.peer
        servers = [
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    guests[0].ns,
                    sys.executable,
                    "-c",
                    SERVE,
                    guests[0].ip,
                    str(p),
                ]
            )
            for p in (8080, 2222)
        ]
        time.sleep(0.5)
        try:
            yield ovs, guests[0], guests[1], guests[2]
        finally:
            for s in servers:
                s.kill()
                s.wait()
            for g in guests:
                remove_guest(g)


def test_rules_state_and_spoofing_on_real_packets(
    lab: tuple[Ovs, NsGuest, NsGuest, NsGuest],
) -> None:
    ovs, vm, peer, other = lab
    open_ports = [fw_port(PEER, ingress_default="allow"), fw_port(OTHER, ingress_default="allow")]
    load(ovs, [fw_port(VM, (vm_group(peer.ip),)), *open_ports])

    assert vm.ping(peer.ip)  # outbound allowed, the replies pass (stateful)
    assert peer.ping(vm.ip)  # ICMP from the peer only
    assert not other.ping(vm.ip)
    assert connect(peer, vm.ip, 8080) == "ok"
    assert connect(other, vm.ip, 8080) == "ok"
    assert connect(peer, vm.ip, 2222).startswith("fail")  # default ingress: deny

    # spoofing: another source address, then another MAC
    vm.sh("ip", "addr", "add", "10.77.0.99/24", "dev", "eth0", check=True)
    try:
        assert not vm.ping(peer.ip, source="10.77.0.99")
    finally:
        vm.sh("ip", "addr", "del", "10.77.0.99/24", "dev", "eth0")
    vm.sh("ip", "link", "set", "eth0", "address", "02:00:0a:4d:00:99", check=True)
    peer.sh("ip", "neigh", "flush", "all")
    try:
        assert not vm.ping(peer.ip)
    finally:
        vm.sh("ip", "link", "set", "eth0", "address", VM[1], check=True)
        vm.sh("ip", "neigh", "flush", "all")
        peer.sh("ip", "neigh", "flush", "all")
    assert vm.ping(peer.ip)

    # a rule change: ICMP now from the other guest only
    t0 = time.monotonic()
    load(ovs, [fw_port(VM, (vm_group(other.ip),)), *open_ports])
    assert other.ping(vm.ip, count=1)
    print(f"\nrule change to first allowed ping: {time.monotonic() - t0:.2f} s")
    assert not peer.ping(vm.ip)


UDP_ECHO = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "while True:\n d,a=s.recvfrom(64); s.sendto(b'echo:'+d, a)\n"
)
UDP_ASK = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
    "s.sendto(b'hi', (sys.argv[1], int(sys.argv[2])))\n"
    "try:\n print(s.recv(64).decode())\nexcept OSError:\n print('none')\n"
)


def udp_ask(guest: NsGuest, address: str, port: int) -> str:
    return guest.sh(sys.executable, "-c", UDP_ASK, address, str(port)).stdout.strip()


def test_udp_rules_allow_deny_and_answers(lab: tuple[Ovs, NsGuest, NsGuest, NsGuest]) -> None:
    ovs, vm, peer, other = lab
    echoes = [
        subprocess.Popen(
            ["ip", "netns", "exec", vm.ns, sys.executable, "-c", UDP_ECHO, vm.ip, str(p)]
        )
        for p in (5353, 5454)
    ]
    try:
        time.sleep(0.3)
        group = FwGroup(
            rules=(
                FwRule(
                    "ingress",
                    protocol="udp",
                    port_min=5353,
                    remotes=(f"{other.ip}/32",),
                    action="deny",
                ),
                FwRule("ingress", protocol="udp", port_min=5353, port_max=5360),
            ),
            intra_group=False,
        )
        open_ports = [
            fw_port(PEER, ingress_default="allow"),
            fw_port(OTHER, ingress_default="allow"),
        ]
        load(ovs, [fw_port(VM, (group,)), *open_ports])
        assert udp_ask(peer, vm.ip, 5353) == "echo:hi"  # allowed in; the answer passes
        assert udp_ask(other, vm.ip, 5353) == "none"  # the deny rule comes first for it
        assert udp_ask(peer, vm.ip, 5454) == "none"  # no rule: default ingress deny
        # egress deny by default for UDP: the VM cannot send to the peer's port
        closed = [fw_port(VM, (group,), egress_default="deny"), *open_ports]
        load(ovs, closed)
        assert udp_ask(vm, peer.ip, 9) == "none"
        assert udp_ask(peer, vm.ip, 5353) == "echo:hi"  # an allowed request's answer still passes
    finally:
        for e in echoes:
            e.kill()
            e.wait()
