"""The agent's distributed DHCP/DNS (``DhcpManager``) on a real Open vSwitch with real DHCP
exchanges: a private OVS instance in a "host" network namespace (its own userspace datapath,
so it never meets another test's OVS), one bridge switching normally, namespace guests as
clients (``busybox udhcpc`` for DHCPv4, a small DHCPv6 client from tests/support/ovs.py).

Known MACs get their address, gateway, DNS servers, domain, host name and MTU; unknown MACs get
no answer; host entries change without restarting dnsmasq, also when an address moves from one
MAC to another; VLAN-tagged segments with the same CIDR are served separately; applying twice
changes nothing, a restarted manager adopts the running processes, a dead one is restarted, a
configuration change restarts only its own dnsmasq, a removed segment leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from corral.agent.network.dhcp import DhcpManager
from corral.agent.network.ovs import Ovs
from corral.api.errors import NetworkError
from corral.api.host_network import DhcpHost, DhcpSegment
from tests.support.ovs import (
    NsGuest,
    NsOvs,
    add_dhcp_guest,
    dhcp6_request,
    dhcp_request,
    ns_host,
    ovs_available,
    remove_guest,
)

pytestmark = [
    pytest.mark.skipif(
        not ovs_available() or not shutil.which("dnsmasq") or not shutil.which("busybox"),
        reason="Open vSwitch, dnsmasq or busybox is not installed",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

BR = "br-dhcp"
M1, M2, M3 = "02:00:0a:3d:00:01", "02:00:0a:3d:00:02", "02:00:0a:3d:00:03"

Lab = tuple[Ovs, NsOvs]
MakeGuest = Callable[..., NsGuest]


def segment_a(hosts: dict[str, DhcpHost], **kw: object) -> DhcpSegment:
    """An untagged dual-stack segment."""
    return DhcpSegment.model_validate(
        {
            "port_group_id": "pg-a",
            "bridge": BR,
            "subnets": [
                {
                    "cidr": "10.61.0.0/24",
                    "server_address": "10.61.0.2",
                    "gateway": "10.61.0.1",
                    "dns_servers": ["10.61.0.53", "10.61.0.54"],
                },
                {
                    "cidr": "fd00:61::/64",
                    "server_address": "fd00:61::2",
                    "dns_servers": ["fd00:61::53"],
                },
            ],
            "domain": "a.example",
            "lease_time": 600,
            "mtu": 1400,
            "hosts": hosts,
            **kw,
        }
    )


def tagged(tag: int, hosts: dict[str, str], **kw: object) -> DhcpSegment:
    """A segment with VLAN ``tag``; every tagged segment uses the same CIDR (own namespaces)."""
    return DhcpSegment.model_validate(
        {
            "port_group_id": f"pg-{tag}",
            "bridge": BR,
            "tag": tag,
            "subnets": [
                {
                    "cidr": "10.62.0.0/24",
                    "server_address": "10.62.0.2",
                    "gateway": "10.62.0.1",
                    "dns_servers": [f"10.62.{tag // 100}.53"],
                }
            ],
            "hosts": {mac: {"ipv4": ip} for mac, ip in hosts.items()},
            **kw,
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    root: Path = tmp_path_factory.mktemp("dhcp-ovs")
    with ns_host(root, f"chost-{uuid.uuid4().hex[:6]}") as host:
        ovs = Ovs(db=host.db, env=host.env)
        await ovs.ensure_bridge(BR)  # fail-mode=secure, as the agent's: switch everything
        await ovs.replace_flows(BR, ["priority=0,actions=NORMAL"])
        yield ovs, host


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A state directory dnsmasq's user (nobody) can search (pytest's are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="corral-dhcp-test-"))
    base.chmod(0o755)
    try:
        yield base / "dhcp"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="module")
async def manager(lab: Lab, run_dir: Path) -> AsyncIterator[DhcpManager]:
    ovs, host = lab
    m = DhcpManager(run_dir, ovs, host_netns=host.netns, log_dhcp=True)
    try:
        yield m
    finally:
        await m.stop_all()


@pytest.fixture
def guest(lab: Lab) -> Iterator[MakeGuest]:
    made: list[NsGuest] = []

    def make(mac: str, tag: int | None = None) -> NsGuest:
        g = add_dhcp_guest(lab[1], BR, mac, tag=tag)
        made.append(g)
        return g

    yield make
    for g in made:
        remove_guest(g)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


async def test_known_macs_get_their_addresses_unknown_ones_nothing(
    manager: DhcpManager, guest: MakeGuest
) -> None:
    await manager.apply([segment_a({
        M1: DhcpHost.model_validate({"ipv4": "10.61.0.11", "ipv6": "fd00:61::11", "hostname": "vm-one"}),
        M2: DhcpHost.model_validate({"ipv4": "10.61.0.12", "hostname": "vm-two"}),
    })])  # fmt: skip
    g1, g2, g3 = guest(M1), guest(M2), guest(M3)

    assert dhcp_request(g1) == {
        "ip": "10.61.0.11", "mask": "24", "router": "10.61.0.1", "dns": "10.61.0.53 10.61.0.54",
        "domain": "a.example", "hostname": "vm-one", "lease": "600", "mtu": "1400",
        "serverid": "10.61.0.2",
    }  # fmt: skip
    lease2 = dhcp_request(g2)
    assert lease2 is not None and (lease2["ip"], lease2["hostname"]) == ("10.61.0.12", "vm-two")
    assert dhcp_request(g3, tries=2) is None  # unknown MAC: ignored

    assert dhcp6_request(g1) == {"ip": "fd00:61::11", "dns": "fd00:61::53"}
    assert dhcp6_request(g2) is None  # known, but no IPv6 address
    assert dhcp6_request(g3) is None  # unknown


async def test_host_entries_change_without_restart(manager: DhcpManager, guest: MakeGuest) -> None:
    await manager.apply([segment_a({
        M1: DhcpHost.model_validate({"ipv4": "10.61.0.11", "ipv6": "fd00:61::11"}),
        M2: DhcpHost.model_validate({"ipv4": "10.61.0.12"}),
    })])  # fmt: skip
    g1, g2, g3 = guest(M1), guest(M2), guest(M3)
    assert (dhcp_request(g1) or {}).get("ip") == "10.61.0.11"
    assert (dhcp_request(g2) or {}).get("ip") == "10.61.0.12"  # leased to M2 now
    assert (dhcp6_request(g1) or {}).get("ip") == "fd00:61::11"  # leased to M1's DUID
    pid = (await manager.running())["pg-a"]

    # M1 gets new addresses, M2 leaves, its IPv4 address and M1's old IPv6 go to M3
    await manager.apply([segment_a({
        M1: DhcpHost.model_validate({"ipv4": "10.61.0.21", "ipv6": "fd00:61::21"}),
        M3: DhcpHost.model_validate({"ipv4": "10.61.0.12", "ipv6": "fd00:61::11"}),
    })])  # fmt: skip
    assert (await manager.running())["pg-a"] == pid  # SIGHUP, no restart
    assert (dhcp_request(g1) or {}).get("ip") == "10.61.0.21"
    assert (dhcp_request(g3) or {}).get("ip") == "10.61.0.12"  # M2's lease was released
    assert dhcp_request(g2, tries=2) is None
    assert (dhcp6_request(g1) or {}).get("ip") == "fd00:61::21"
    assert (dhcp6_request(g3) or {}).get("ip") == "fd00:61::11"  # M1's lease was released
    assert (await manager.running())["pg-a"] == pid


async def test_vlan_segments_with_one_cidr_are_served_separately(
    manager: DhcpManager, guest: MakeGuest
) -> None:
    # both MACs are known in both segments: what they get shows which server answered
    await manager.apply([
        tagged(100, {M1: "10.62.0.100", M2: "10.62.0.101"}),
        tagged(200, {M1: "10.62.0.200", M2: "10.62.0.201"}),
    ])  # fmt: skip
    a, b, untagged = guest(M1, tag=100), guest(M2, tag=200), guest(M1)
    lease_a, lease_b = dhcp_request(a), dhcp_request(b)
    assert lease_a is not None and (lease_a["ip"], lease_a["dns"]) == ("10.62.0.100", "10.62.1.53")
    assert lease_b is not None and (lease_b["ip"], lease_b["dns"]) == ("10.62.0.201", "10.62.2.53")
    assert lease_a["serverid"] == lease_b["serverid"] == "10.62.0.2"
    remove_guest(a)  # the untagged port must not reach either server (a is gone: no clash)
    assert dhcp_request(untagged, tries=2) is None


async def test_serves_dns_for_its_hosts(manager: DhcpManager, guest: MakeGuest) -> None:
    seg = DhcpSegment.model_validate({
        "port_group_id": "pg-dns", "bridge": BR, "domain": "b.example", "serve_dns": True,
        "subnets": [{"cidr": "10.63.0.0/24", "server_address": "10.63.0.2", "gateway": "10.63.0.1"}],
        "hosts": {M1: {"ipv4": "10.63.0.11", "hostname": "vm-one"},
                  M2: {"ipv4": "10.63.0.12", "hostname": "vm-two"}},
    })  # fmt: skip
    await manager.apply([seg])
    g1 = guest(M1)
    lease = dhcp_request(g1)
    assert lease is not None and (lease["ip"], lease["dns"]) == ("10.63.0.11", "10.63.0.2")
    g1.sh("ip", "addr", "add", "10.63.0.11/24", "dev", "eth0", check=True)
    out = g1.sh("busybox", "nslookup", "vm-two.b.example", "10.63.0.2").stdout
    assert "10.63.0.12" in out, out


async def test_idempotent_adopted_restarted_and_removed(
    lab: Lab, manager: DhcpManager, run_dir: Path, guest: MakeGuest
) -> None:
    ovs, host = lab
    wanted = [tagged(100, {M1: "10.62.0.100"}), tagged(200, {M2: "10.62.0.201"})]
    await manager.apply(wanted)
    pids = await manager.running()
    assert set(pids) == {"pg-100", "pg-200"}
    files = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    ports = host.vsctl("list-ports", BR).split()
    names = {pg: manager.names(pg) for pg in pids}
    assert {n.host_port for n in names.values()} <= set(ports)
    assert host.vsctl("get", "port", names["pg-100"].host_port, "tag").strip() == "100"

    await manager.apply(wanted)  # again: nothing changes
    assert await manager.running() == pids
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == files
    assert host.vsctl("list-ports", BR).split() == ports

    # a restarted agent (a new manager on the same state) adopts the running processes
    restarted = DhcpManager(run_dir, ovs, host_netns=host.netns, log_dhcp=True)
    await restarted.apply(wanted)
    assert await restarted.running() == pids

    # a dead dnsmasq is restarted by the next apply and serves again
    os.kill(pids["pg-100"], signal.SIGKILL)
    await restarted.apply(wanted)
    now = await restarted.running()
    assert now["pg-100"] != pids["pg-100"] and now["pg-200"] == pids["pg-200"]
    assert (dhcp_request(guest(M1, tag=100)) or {}).get("ip") == "10.62.0.100"

    # a configuration change restarts that segment's dnsmasq only
    wanted[1] = tagged(200, {M2: "10.62.0.201"}, lease_time=300)
    await restarted.apply(wanted)
    changed = await restarted.running()
    assert changed["pg-100"] == now["pg-100"] and changed["pg-200"] != now["pg-200"]
    b = guest(M2, tag=200)
    assert (dhcp_request(b) or {}).get("lease") == "300"

    # a removed segment: dnsmasq stopped, port, namespace and files gone, no more answers
    await restarted.apply(wanted[:1])
    assert set(await restarted.running()) == {"pg-100"}
    assert not alive(changed["pg-200"])
    assert names["pg-200"].host_port not in host.vsctl("list-ports", BR).split()
    assert not netns_exists(names["pg-200"].netns)
    assert not (run_dir / names["pg-200"].short).exists()
    assert dhcp_request(b, tries=2) is None

    await restarted.stop_all()
    assert not alive(changed["pg-100"])
    assert not netns_exists(names["pg-100"].netns)
    assert not [p for p in host.vsctl("list-ports", BR).split() if p.startswith("cdh-")]
    assert list(run_dir.iterdir()) == []


async def test_one_failing_segment_does_not_stop_the_others(
    manager: DhcpManager, guest: MakeGuest
) -> None:
    good = tagged(100, {M1: "10.62.0.100"})
    bad = tagged(200, {M2: "10.62.0.201"}).model_copy(update={"bridge": "br-missing"})
    with pytest.raises(NetworkError) as err:
        await manager.apply([bad, good])
    assert set(err.value.context["failed"]) == {"pg-200"}
    assert (dhcp_request(guest(M1, tag=100)) or {}).get("ip") == "10.62.0.100"
    await manager.apply([good])  # the failed one is cleaned up like any removed segment
    assert set(await manager.running()) == {"pg-100"}
    assert not netns_exists(manager.names("pg-200").netns)
