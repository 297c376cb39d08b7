"""The agent's ``OvsNetworkPlane`` on a private Open vSwitch with real packets: a "host" network
namespace with its own OVS (userspace datapath), a flat segment on an uplink (a veth inside the
host), namespace "guests" plugged as VM ports (``nic-a`` …, access ports with the segment's
local tag, as libvirt plugs a NIC) and firewall flows computed by ``corral.netflows``.

One ``NetworkApply`` sets up bridge, uplink, patch ports and flows; ICMP is allowed into one
guest and not into the other, so a ping works one way only; applying twice changes nothing; a
port that does not exist yet is skipped and its flows appear when it does and ``refresh`` runs;
lost flows (``del-flows``: what an ``ovs-vswitchd`` restart does) are restored by ``refresh``,
also by a new plane on the same data directory (a restarted agent); a DHCP service on the
segment gives a guest under the firewall its address (the DHCP port is a trunk of its segment
and DHCP answers pass whatever the guest's ingress policy)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from corral.agent.network.ovs import Ovs
from corral.agent.network.ovs_plane import OvsNetworkPlane
from corral.api.agent import NetworkApply, PortFlows, network_digest
from corral.api.host_network import DhcpSegment, Segment, Uplink
from corral.api.networks import SegmentType
from corral.netflows.firewall import FwGroup, FwPort, FwRule, compile_port
from tests.support.ovs import (
    NsGuest,
    NsOvs,
    add_dhcp_guest,
    add_netns,
    dhcp_request,
    ovs_available,
    remove_guest,
    veth_between,
)

pytestmark = pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed")

BR = "br-int"
PG = "pg-flat"
TAG = 5
A = ("nic-a", "10.80.0.10", "02:00:0a:50:00:0a", 1)
B = ("nic-b", "10.80.0.11", "02:00:0a:50:00:0b", 2)
C = ("nic-c", "10.80.0.12", "02:00:0a:50:00:0c", 3)
D_MAC, D_IP = "02:00:0a:50:00:0d", "10.80.0.13"
ICMP_IN = FwGroup(rules=(FwRule("ingress", protocol="icmp"),), intra_group=False)


def port_flows(nic: tuple[str, str, str, int], *, icmp_in: bool) -> PortFlows:
    port, ip, mac, n = nic
    fw = FwPort(ofport=port, mac=mac, ips=(ip,), zone=n, cookie=n, tag=TAG,
                groups=(ICMP_IN,) if icmp_in else ())  # fmt: skip
    return PortFlows(port=port, flows=compile_port(fw))


def network(
    generation: int, ports: list[PortFlows], dhcp: Sequence[DhcpSegment] = ()
) -> NetworkApply:
    return NetworkApply(
        generation=generation,
        segments=[Segment(port_group_id=PG, type=SegmentType.flat, local_tag=TAG)],
        uplink=Uplink(interface="up0"),
        dhcp=list(dhcp),
        ports=ports,
    )


def plug(host: NsOvs, nic: tuple[str, str, str, int]) -> NsGuest:
    """A namespace guest whose veth peer is the VM port ``nic`` on ``br-int`` (tagged)."""
    port, ip, mac, _ = nic
    ns = f"cg-{uuid.uuid4().hex[:6]}"
    add_netns(ns)
    veth_between((host.netns, port), (ns, "eth0"))
    guest = NsGuest(ns, ip, mac, port)
    guest.sh("ip", "link", "set", "eth0", "address", mac, check=True)
    guest.sh("ip", "addr", "add", f"{ip}/24", "dev", "eth0", check=True)
    host.vsctl("add-port", BR, port, "--", "set", "port", port, f"tag={TAG}")
    return guest


def unplug(host: NsOvs, guest: NsGuest) -> None:
    host.vsctl("--if-exists", "del-port", BR, guest.peer)
    remove_guest(guest)
    host.sh("ip", "link", "del", guest.peer, check=False)


def flows(host: NsOvs) -> list[str]:
    out = host.ofctl("--no-stats", "dump-flows", BR)
    return sorted(line.strip() for line in out.splitlines() if "actions=" in line)


def cookie_flows(host: NsOvs, cookie: int) -> int:
    return len(flows_with(host, f"cookie={cookie:#x}/-1"))


def flows_with(host: NsOvs, match: str) -> list[str]:
    out = host.ofctl("--no-stats", "dump-flows", BR, match)
    return [line for line in out.splitlines() if "actions=" in line]


def plane(host: NsOvs, data_dir: Path) -> OvsNetworkPlane:
    return OvsNetworkPlane(data_dir=data_dir, ovs=Ovs(db=host.db, env=host.env), bridge=BR,
                           netns=host.netns)  # fmt: skip


async def test_apply_firewall_absent_ports_and_refresh(host: NsOvs, data_dir: Path) -> None:
    p = plane(host, data_dir)
    ports = [port_flows(A, icmp_in=True), port_flows(B, icmp_in=False)]
    state = network(1, ports)
    assert await p.apply(state) == network_digest(state)  # bridge made, no VM port yet
    assert host.vsctl("get", "bridge", BR, "fail_mode").strip() == "secure"
    assert cookie_flows(host, 1) == 0  # nic-a is not there: skipped
    guests = [plug(host, A), plug(host, B)]
    try:
        a, b = guests
        await p.refresh()  # ports appeared: their flows are loaded
        assert cookie_flows(host, 1) > 0 and cookie_flows(host, 2) > 0
        assert b.ping(a.ip)  # ICMP into a is allowed
        assert not a.ping(b.ip)  # into b it is not

        before = flows(host)
        assert await p.apply(network(2, ports)) == network_digest(state)  # again: no change
        assert flows(host) == before

        # a port not there yet: skipped, its flows come with it and the next refresh
        with_c = network(3, [*ports, port_flows(C, icmp_in=True)])
        await p.apply(with_c)
        assert cookie_flows(host, 3) == 0 and flows(host) == before
        c = plug(host, C)
        guests.append(c)
        await p.refresh()
        assert cookie_flows(host, 3) > 0
        assert a.ping(c.ip) and not c.ping(b.ip)

        # ovs-vswitchd lost its flows: refresh notices (the base flows are gone)
        host.ofctl("del-flows", BR)
        assert not a.ping(c.ip, count=1)
        await p.refresh()
        assert a.ping(c.ip)
        after = flows(host)

        # a restarted agent: a new plane on the same data directory applies the stored state
        host.ofctl("del-flows", BR)
        again = plane(host, data_dir)
        again.load()
        assert again.digest == network_digest(with_c)
        await again.refresh()
        assert flows(host) == after
        assert b.ping(a.ip) and not a.ping(b.ip, count=1)

        # an older generation is ignored
        assert await again.apply(network(2, ports)) == network_digest(with_c)
        assert cookie_flows(host, 3) > 0

        # a stopped VM's port vanishes: refresh drops its flows (no name of an absent port)
        unplug(host, guests.pop())
        await again.refresh()
        assert cookie_flows(host, 3) == 0
    finally:
        for g in guests:
            unplug(host, g)


@pytest.mark.skipif(
    not shutil.which("dnsmasq") or not shutil.which("busybox"),
    reason="dnsmasq or busybox is not installed",
)
async def test_dhcp_through_the_pipeline(host: NsOvs, data_dir: Path) -> None:
    p = plane(host, data_dir)
    await p.apply(network(1, []))  # the bridge
    d = add_dhcp_guest(host, BR, D_MAC, tag=TAG)
    try:
        fw = FwPort(ofport=d.peer, mac=D_MAC, ips=(D_IP,), zone=4, cookie=4, tag=TAG)
        service = DhcpSegment.model_validate({
            "port_group_id": PG, "bridge": "br-elsewhere",  # the agent's bridge is used
            "subnets": [{"cidr": "10.80.0.0/24", "server_address": "10.80.0.2",
                         "gateway": "10.80.0.1"}],
            "hosts": {D_MAC: {"ipv4": D_IP}},
        })  # fmt: skip
        state = network(2, [PortFlows(port=d.peer, flows=compile_port(fw))], [service])
        await p.apply(state)
        dhcp_port = p.dhcp.names(PG).host_port
        assert host.vsctl("get", "port", dhcp_port, "tag").strip() == str(TAG)
        assert flows_with(host, f"in_port={dhcp_port}")  # a trunk of its segment
        lease = dhcp_request(d)
        assert lease is not None and (lease["ip"], lease["router"]) == (D_IP, "10.80.0.1")
    finally:
        unplug(host, d)
        await p.apply(network(3, []))  # the DHCP service is removed
        assert await p.dhcp.running() == {}


async def test_an_uplink_with_the_hosts_addresses_is_not_taken_over(
    host: NsOvs, data_dir: Path
) -> None:
    from corral.api.errors import NetworkError

    host.sh("ip", "addr", "add", "192.0.2.7/24", "dev", "up0")
    p = plane(host, data_dir)
    with pytest.raises(NetworkError) as caught:
        await p.apply(network(1, []))
    assert "up0" in caught.value.message and "192.0.2.7/24" in caught.value.message
    assert "up0" not in host.vsctl("show")  # not on any bridge
    host.sh("ip", "addr", "del", "192.0.2.7/24", "dev", "up0")
    await p.apply(network(2, []))
    assert "up0" in host.vsctl("list-ports", "br-uplink").split()
