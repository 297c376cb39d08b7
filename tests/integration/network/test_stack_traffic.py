"""The whole network stack with real packets, driven through the REST API: a server and two
simulated hosts (``running_stack``) whose network planes are real ones (``OvsNetworkPlane``)
on two "hosts" — network namespaces with their own Open vSwitch — joined by an underlay network
(a Linux bridge in a third namespace, VXLAN) and an uplink veth (VLAN).

The server computes each host's state (segments and local tags, VXLAN remotes from the hosts'
``tunnel_ip`` facts, DHCP services with the NICs' addresses, firewall flows) and pushes it; the
agents apply it. VMs are simulated, so each VM NIC is played by a namespace guest plugged into
``br-int`` as libvirt would plug the tap: the NIC's port name, its MAC, the local tag and MTU
of the VM's stored definition. Guests get their addresses by DHCP (through the firewall
pipeline) and then talk: ping, TCP connects (echo listeners), ARP frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.network.ovs import Ovs
from corral.agent.network.ovs_plane import OvsNetworkPlane
from corral.agent.runtime import HostRuntime
from corral.api.agent import NetworkApply
from corral.api.host_network import Underlay
from corral.server.services import net_sync
from corral.up import Stack
from tests.integration.identity.admin import done
from tests.integration.test_vm_sim import make_qcow2
from tests.support.ovs import (
    NsGuest,
    NsOvs,
    add_netns,
    del_netns,
    dhcp_request,
    ns_host,
    ns_run,
    ovs_available,
    run,
    veth_between,
)
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = [
    pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed"),
    pytest.mark.skipif(
        not shutil.which("dnsmasq") or not shutil.which("busybox"),
        reason="dnsmasq or busybox is not installed",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]

HOSTS = ("a", "b")
TUNNEL_IP = {"a": "10.231.0.1", "b": "10.231.0.2"}
VX_CIDR, VL_CIDR = "10.61.0.0/24", "10.62.0.0/24"
PREFIX = "cst"  # every namespace of this module starts with it

# --- scripts run inside the guests -----------------------------------------------------------

SERVE = r"""
import socket, sys, threading
def echo(c):
    with c:
        while True:
            d = c.recv(4096)
            if not d:
                return
            c.sendall(d)
def serve(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
for p in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(p)))
    s.listen(64)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CONNECT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.sendall(b"hi")
    assert s.recv(2) == b"hi"
except (OSError, AssertionError):
    sys.exit(1)
"""

UNTIL = r"""
import socket, sys, time
ip, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "open"
deadline = time.monotonic() + float(sys.argv[4])
while time.monotonic() < deadline:
    try:
        socket.create_connection((ip, port), timeout=0.2).close()
        ok = True
    except OSError:
        ok = False
    if ok == want:
        print(time.monotonic(), flush=True)
        sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
"""

KEEP = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
for line in sys.stdin:
    s.sendall(line.encode())
    try:
        print(s.recv(100).decode().strip(), flush=True)
    except OSError as exc:
        print("error", exc, flush=True)
"""

ARP_REPLY = r"""
import socket, sys
mac = lambda m: bytes.fromhex(m.replace(":", ""))
own, dst, dst_ip = mac(sys.argv[1]), mac(sys.argv[2]), socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for claim in sys.argv[4:]:
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x02" + own + socket.inet_aton(claim) + dst + dst_ip
    s.send(dst + own + b"\x08\x06" + arp)
"""

SNIFF = r"""
import select, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while (left := deadline - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        data, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING or len(data) < 34:
            continue
        kind = {b"\x08\x06": "arp", b"\x08\x00": "ip"}.get(data[12:14], data[12:14].hex())
        source = data[28:32] if kind == "arp" else data[26:30]  # ARP sender / IPv4 source
        print(data[6:12].hex(":"), kind, socket.inet_ntoa(source), flush=True)
"""


# --- the lab ---------------------------------------------------------------------------------


@dataclass
class Guest:
    """A VM NIC played by a namespace guest (``peer`` is the NIC's OVS port)."""

    g: NsGuest
    host: str
    vm: dict[str, Any]
    nic: dict[str, Any]
    lease: dict[str, str] | None = None
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.g.ip

    @property
    def mac(self) -> str:
        return self.g.mac


@dataclass
class Lab:
    stack: Stack
    c: httpx.AsyncClient
    hosts: dict[str, NsOvs]  # by letter
    planes: dict[str, OvsNetworkPlane]
    host_ids: dict[str, str]
    runtimes: dict[str, HostRuntime]
    guests: list[Guest] = field(default_factory=list)

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        op = await wait_op(self.c, r.json())
        assert op["status"] == "succeeded", op
        return op

    async def get(self, path: str) -> Any:
        r = await self.c.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    async def settle(self) -> None:
        await net_sync.settle(self.stack.server.services, self.host_ids.values())

    def state(self, host: str) -> NetworkApply:
        """What the host's plane holds (the server's last push)."""
        state = self.planes[host].state
        assert state is not None
        return state

    def flows(self, host: str) -> str:
        return self.hosts[host].ofctl("--no-stats", "dump-flows", "br-int")

    async def vm(self, name: str, host: str, nics: list[dict[str, Any]]) -> list[Guest]:
        """Create VM ``name`` on ``host`` through REST, plug a guest as each of its NICs (as
        libvirt would, from the agent's stored definition) and have it ask for its address by
        DHCP (which must be the one IPAM allocated)."""
        body = {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 128,
                "host": self.host_ids[host], "nics": nics}  # fmt: skip
        await self.ok(await self.c.post("/vms", json=body))
        vm = await self.get(f"/vms/{name}")
        assert vm["host_id"] == self.host_ids[host]
        got = await self.get(f"/vms/{name}/nics")
        stored = self.runtimes[host].specs.get(vm["id"])
        assert stored is not None
        specs = {n.nic_id: n for n in stored.spec.nics}
        out = []
        for nic in got:
            spec = specs[nic["id"]]
            assert spec.mac == nic["mac"] and spec.tag is not None
            # libvirt plugs the tap with the tag the host's segment has in the pushed state
            local = {seg.port_group_id: seg.local_tag for seg in self.state(host).segments}
            assert spec.tag == local[nic["port_group_id"]]
            g = plug(self.hosts[host], nic["port"], nic["mac"], spec.tag, spec.mtu)
            guest = Guest(g, host, vm, nic)
            self.guests.append(guest)
            out.append(guest)
        await self.settle()  # the neighbours' pushes (VXLAN remotes, remote-group members)
        await self.planes[host].refresh()  # the ports exist now: their flows are loaded
        for guest in out:
            address = guest.nic["ips"][0]
            guest.lease = await asyncio.to_thread(dhcp_request, guest.g, 4, 1)
            assert guest.lease is not None, f"{name}: no DHCP answer"
            assert guest.lease["ip"] == address, (guest.lease, guest.nic)
            guest.g.ip = address
            guest.g.sh("ip", "addr", "add", f"{address}/24", "dev", "eth0", check=True)
        return out

    async def forget(self, guest: Guest) -> None:
        unplug(self.hosts[guest.host], guest)
        self.guests.remove(guest)


def plug(host: NsOvs, port: str, mac: str, tag: int, mtu: int | None) -> NsGuest:
    """A namespace guest as a VM NIC: a veth whose host end is ``port`` on ``br-int`` (access
    port with ``tag``), guest end ``eth0`` with ``mac``, no address yet, ``mtu`` on both."""
    ns = f"{PREFIX}g-{uuid.uuid4().hex[:6]}"
    add_netns(ns)
    veth_between((host.netns, port), (ns, "eth0"))
    g = NsGuest(ns, "", mac, port)
    g.sh("ip", "link", "set", "eth0", "address", mac, check=True)
    if mtu is not None:
        g.sh("ip", "link", "set", "eth0", "mtu", str(mtu), check=True)
        host.sh("ip", "link", "set", port, "mtu", str(mtu))
    host.vsctl("add-port", "br-int", port, "--", "set", "port", port, f"tag={tag}")
    return g


def unplug(host: NsOvs, guest: Guest) -> None:
    for p in guest.procs:
        if p.poll() is None:
            p.kill()
        with contextlib.suppress(ValueError, OSError):
            p.communicate(timeout=10)
    run("ovs-vsctl", f"--db={host.db}", "--timeout=10", "--if-exists", "del-port", "br-int",
        guest.g.peer, check=False, env=host.env)  # fmt: skip
    del_netns(guest.g.ns)
    host.sh("ip", "link", "del", guest.g.peer, check=False)


def serve(guest: Guest, *ports: int) -> None:
    """TCP echo listeners on ``ports`` in the guest (until it is unplugged)."""
    p = spawn(guest, SERVE, *map(str, ports))
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"


def spawn(guest: Guest, script: str, *args: str) -> subprocess.Popen[str]:
    """A python ``script`` in the guest in the background, stdin and stdout piped (killed
    when the guest is unplugged)."""
    p = subprocess.Popen(
        ["ip", "netns", "exec", guest.g.ns, sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    guest.procs.append(p)
    return p


async def gexec(guest: Guest, *args: str, timeout: float = 15) -> tuple[int, str]:
    """A command in the guest without blocking the event loop (the stack runs in it)."""
    p = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", guest.g.ns, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(p.communicate(), timeout)
    except TimeoutError:
        p.kill()
        await p.wait()
        return -1, ""
    assert p.returncode is not None
    return p.returncode, out.decode()


async def pings(src: Guest, dst: str, *, count: int = 2, source: str | None = None) -> bool:
    extra = ["-I", source] if source else []
    code, _ = await gexec(src, "ping", "-c", str(count), "-i", "0.2", "-W", "1", *extra, dst)
    return code == 0


async def connects(src: Guest, dst: Guest, port: int, timeout: float = 1.0) -> bool:
    """A TCP connection from ``src`` to ``dst:port`` opens and echoes (both directions)."""
    code, _ = await gexec(src, sys.executable, "-c", CONNECT, dst.ip, str(port), str(timeout))
    return code == 0


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


def netns_list() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines()]


def our_namespaces() -> list[str]:
    return [n for n in netns_list() if n.startswith(PREFIX)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    tmp: Path = tmp_path_factory.mktemp("stack-traffic")
    tag = uuid.uuid4().hex[:6]
    # the planes' data directories: dnsmasq (as nobody) must search them (pytest's are 0700)
    planes_dir = Path(tempfile.mkdtemp(prefix="corral-stack-traffic-"))
    planes_dir.chmod(0o755)
    with contextlib.ExitStack() as es:
        es.callback(shutil.rmtree, planes_dir, True)
        net = es.enter_context(physical_network(f"{PREFIX}n-{tag}"))
        hosts = {h: es.enter_context(ns_host(tmp / h, f"{PREFIX}{h}-{tag}")) for h in HOSTS}
        for h, host in hosts.items():
            veth_between((host.netns, "ul0"), (net, f"ul-{h}"))
            ns_run(net, "ip", "link", "set", f"ul-{h}", "master", "ul")
        veth_between((hosts["a"].netns, "up0"), (hosts["b"].netns, "up0"))
        async with (
            running_stack(
                tmp / "stack", sim_hosts=2, agent_overrides={"heartbeat_interval": 0.5}
            ) as stack,  # fmt: skip
            api_client(stack) as c,
        ):
            listed = (await c.get("/hosts")).json()["items"]
            by_path = {h["url"].rstrip("/").rsplit("/sim/", 1)[1]: h["id"] for h in listed}
            host_ids = {h: by_path[str(i)] for i, h in enumerate(HOSTS)}
            runtimes = {h: stack.agent.runtimes[f"/sim/{i}"] for i, h in enumerate(HOSTS)}
            planes: dict[str, OvsNetworkPlane] = {}
            try:
                for h in HOSTS:
                    (planes_dir / h).mkdir(mode=0o755)
                    plane = OvsNetworkPlane(
                        data_dir=planes_dir / h,
                        ovs=Ovs(db=hosts[h].db, env=hosts[h].env),
                        underlay=Underlay(interface="ul0", address=f"{TUNNEL_IP[h]}/24"),
                        netns=hosts[h].netns,
                    )
                    plane.load()
                    planes[h] = plane
                    rt = runtimes[h]
                    rt.set_network(plane)  # tasks, heartbeat digest, facts' tunnel IP
                    rt.heartbeat.wake()  # the facts changed (tunnel_ip): the next beat says so
                await _tunnel_ips_known(c, host_ids)
                await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
                await _networks(c)
                pg_ids = [(await c.get(f"/port-groups/{n}")).json()["id"] for n in ("vx", "vl")]
                dhcp_netns = {p.dhcp.names(pg).netns for p in planes.values() for pg in pg_ids}
                yield Lab(stack, c, hosts, planes, host_ids, runtimes)
            finally:
                for plane in planes.values():  # dnsmasq, its namespaces and ports
                    with contextlib.suppress(Exception):
                        await plane.dhcp.stop_all()
    left = our_namespaces() + [n for n in netns_list() if n in dhcp_netns]
    assert left == [], f"namespaces left behind: {left}"


async def _tunnel_ips_known(c: httpx.AsyncClient, host_ids: dict[str, str]) -> None:
    """Until the server holds each host's tunnel IP (its facts come with a heartbeat)."""
    deadline = time.monotonic() + 10
    for h, host_id in host_ids.items():
        while True:
            facts = (await c.get(f"/hosts/{host_id}")).json().get("facts") or {}
            if facts.get("tunnel_ip") == TUNNEL_IP[h]:
                break
            assert time.monotonic() < deadline, f"host {h}: tunnel IP unknown: {facts}"
            await asyncio.sleep(0.05)


async def _networks(c: httpx.AsyncClient) -> None:
    cluster = (await c.get("/clusters")).json()["items"][0]["name"]
    done(await c.post("/switches", json={"name": "sw", "clusters": [cluster], "uplink": "up0"}))
    for body in (
        {"name": "vx", "switch": "sw", "type": "vxlan", "segment_id": 5000},
        {"name": "vl", "switch": "sw", "type": "vlan", "segment_id": 100},
    ):
        done(await c.post("/port-groups", json=body))
    done(await c.post("/subnets", json={"name": "sn-vx", "port_group": "vx", "cidr": VX_CIDR}))
    done(await c.post("/subnets", json={"name": "sn-vl", "port_group": "vl", "cidr": VL_CIDR}))
    icmp = [{"direction": "ingress", "protocol": "icmp"}]
    body = {"name": "pingable", "intra_group": False, "rules": icmp}
    done(await c.post("/security-groups", json=body))


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(lab: Lab) -> AsyncIterator[None]:
    yield
    for guest in list(lab.guests):
        await lab.forget(guest)
    for vm in (await lab.get("/vms?limit=1000"))["items"]:
        await lab.ok(await lab.c.delete(f"/vms/{vm['id']}"))
    await lab.settle()


# --- the tests -------------------------------------------------------------------------------


async def test_vxlan_across_hosts_vlan_on_the_uplink_segments_apart(lab: Lab) -> None:
    vx = {"port_group": "vx", "security_groups": ["pingable"]}
    vl = {"port_group": "vl", "security_groups": ["pingable"]}
    (vm1,) = await lab.vm("vm1", "a", [vx])
    (vm2,) = await lab.vm("vm2", "b", [vx])
    (vm3,) = await lab.vm("vm3", "a", [vl])
    (vm4,) = await lab.vm("vm4", "b", [vl])
    # DHCP gave each its allocated address (checked in ``vm``) with the port group's options
    assert vm1.lease is not None and vm1.lease["mtu"] == "1450"
    assert vm1.lease["router"] == "10.61.0.1"
    assert vm3.lease is not None and vm3.lease["router"] == "10.62.0.1"
    # host A's tags: the two segments are apart on its br-int
    seg_tags = {s.segment_id: s.local_tag for s in lab.state("a").segments}
    assert len(set(seg_tags.values())) == 2 and set(seg_tags) == {5000, 100}
    tags = {g.vm["name"]: lab.hosts["a"].vsctl("get", "port", g.g.peer, "tag").strip()
            for g in (vm1, vm3)}  # fmt: skip
    assert tags == {"vm1": str(seg_tags[5000]), "vm3": str(seg_tags[100])}

    assert await pings(vm1, vm2.ip) and await pings(vm2, vm1.ip)  # VXLAN A <-> B
    assert await pings(vm3, vm4.ip) and await pings(vm4, vm3.ip)  # VLAN 100 over the uplink
    assert " 100  " + vm4.mac in lab.hosts["a"].appctl("fdb/show", "br-uplink")
    # another segment is not reachable, even on-link (ARP stays in its segment)
    for g in (vm3, vm4):
        g.g.sh("ip", "route", "add", VX_CIDR, "dev", "eth0", check=True)
    vm1.g.sh("ip", "route", "add", VL_CIDR, "dev", "eth0", check=True)
    results = await asyncio.gather(
        pings(vm3, vm1.ip, count=1), pings(vm3, vm2.ip, count=1),
        pings(vm4, vm1.ip, count=1), pings(vm1, vm3.ip, count=1),
    )  # fmt: skip
    assert list(results) == [False] * 4
    # and the VXLAN remotes are the hosts' tunnel IPs the server learnt from their facts
    (seg,) = [s for s in lab.state("a").segments if s.segment_id == 5000]
    assert seg.remotes == [TUNNEL_IP["b"]]


async def _tiers(lab: Lab) -> dict[str, Guest]:
    """The reference's example (docs/security-groups.md): web, app and db tiers, and ``ops``
    on every VM allowing SSH from the operators' network only (ops1's address)."""
    c = lab.c
    ops_net = "10.61.0.200/30"
    tcp = {"direction": "ingress", "protocol": "tcp"}
    groups = {
        "web": [{**tcp, "port_min": 80, "remote_cidr": "0.0.0.0/0"},
                {**tcp, "port_min": 443, "remote_cidr": "0.0.0.0/0"}],
        "app": [{**tcp, "port_min": 8080, "remote_group": "web"}],
        "db": [{**tcp, "port_min": 3306, "remote_group": "app"}],
    }  # fmt: skip
    for name, rules in groups.items():
        if (await c.get(f"/security-groups/{name}")).status_code == 404:
            done(await c.post("/security-groups", json={"name": name, "rules": rules}))
    if (await c.get("/security-groups/ops")).status_code == 404:
        body = {"name": "ops", "intra_group": False,
                "rules": [{**tcp, "port_min": 22, "remote_cidr": ops_net}]}  # fmt: skip
        done(await c.post("/security-groups", json=body))

    def nic(group: str | None, **extra: Any) -> list[dict[str, Any]]:
        sgs = [group, "ops"] if group else ["ops"]
        return [{"port_group": "vx", "security_groups": sgs, **extra}]

    (web1,) = await lab.vm("web1", "a", nic("web"))
    (app1,) = await lab.vm("app1", "b", nic("app"))
    (db1,) = await lab.vm("db1", "a", nic("db"))
    (ops1,) = await lab.vm("ops1", "b", nic(None, ips=["10.61.0.201"]))
    for g in (web1, app1, db1, ops1):
        serve(g, 22, 80, 443, 3306, 8080, 9000, 5000)
    return {"web1": web1, "app1": app1, "db1": db1, "ops1": ops1}


async def test_web_app_db_tiers(lab: Lab) -> None:
    t = await _tiers(lab)
    web1, app1, db1, ops1 = t["web1"], t["app1"], t["db1"], t["ops1"]
    cases = [
        (web1, app1, 8080, True),
        (web1, db1, 3306, False),
        (app1, db1, 3306, True),
        (ops1, db1, 22, True),
        (ops1, web1, 22, True),
        (ops1, app1, 22, True),
        (web1, db1, 22, False),
        (app1, web1, 22, False),
        (db1, web1, 80, True),
        (app1, web1, 443, True),
        (ops1, web1, 80, True),
        (db1, app1, 8080, False),
        (ops1, app1, 8080, False),
        (db1, web1, 8080, False),
        (web1, app1, 3306, False),
    ]
    results = await asyncio.gather(*(connects(s, d, p) for s, d, p, _ in cases))
    got = {
        (s.vm["name"], d.vm["name"], p): r for (s, d, p, _), r in zip(cases, results, strict=True)
    }
    want = {(s.vm["name"], d.vm["name"], p): ok for s, d, p, ok in cases}
    assert got == want


async def test_a_rule_change_takes_effect_quickly(lab: Lab) -> None:
    t = await _tiers(lab)
    app1, db1 = t["app1"], t["db1"]  # db1 on host A, app1 on host B
    assert not await connects(app1, db1, 9000)
    # an established connection (allowed: app -> db:3306) across the rule changes
    keep = spawn(app1, KEEP, db1.ip, "3306")

    async def say(word: str) -> str:
        assert keep.stdin is not None and keep.stdout is not None
        keep.stdin.write(word + "\n")
        keep.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(keep.stdout.readline), 5)
        return line.strip()

    assert await say("one") == "one"

    async def until(state: str) -> float:
        """The monotonic time at which a connect app1 -> db1:9000 was first ``state``."""
        code, out = await gexec(app1, sys.executable, "-c", UNTIL, db1.ip, "9000", state, "5")
        assert code == 0, f"db1:9000 not {state} within 5 s"
        return float(out.split()[0])

    async def change(state: str, request: Any) -> tuple[float, dict[str, Any]]:
        """Seconds from sending ``request`` until db1:9000 is ``state`` (a poller in app1
        that started before), and the operation."""
        poll = asyncio.ensure_future(until(state))
        await asyncio.sleep(0.3)  # the poller runs (and sees the old state) first
        t0 = time.monotonic()
        op = await lab.ok(await request)
        return await poll - t0, op

    rule = {"direction": "ingress", "protocol": "tcp", "port_min": 9000}
    took, op = await change("open", lab.c.post("/security-groups/db/rules", json=rule))
    print(f"\nrule added: db1:9000 open after {took:.3f} s")
    assert took < 2.0
    assert await say("two") == "two"  # the rule change left the connection alone

    rule_id = op["target_id"]
    took, _ = await change("closed", lab.c.delete(f"/security-groups/db/rules/{rule_id}"))
    print(f"rule deleted: db1:9000 refused after {took:.3f} s")
    assert took < 2.0
    assert not await connects(app1, db1, 9000)
    assert await say("three") == "three"  # still allowed: it survives this change as well


async def sniffing(guest: Guest, seconds: float, action: Any) -> set[tuple[str, ...]]:
    """Run ``action`` (awaitable) while ``guest`` records what it receives for ``seconds``:
    a set of (source MAC, ``arp``/``ip``/ethertype, ARP sender or IPv4 source address)."""
    sniff = spawn(guest, SNIFF, str(seconds))
    assert sniff.stdout is not None and sniff.stdout.readline().strip() == "ready"
    await action
    out, _ = await asyncio.to_thread(sniff.communicate, "", seconds + 10)
    return {tuple(line.split()) for line in out.splitlines()}


async def test_spoofing_is_dropped_and_allowed_pairs_work(lab: Lab) -> None:
    vx = {"port_group": "vx"}
    (x,) = await lab.vm("sx", "a", [{**vx, "security_groups": ["pingable"]}])
    (y,) = await lab.vm("sy", "b", [vx])
    (z,) = await lab.vm("sz", "a", [vx])
    assert await pings(y, x.ip)
    y.g.sh("ip", "neigh", "replace", x.ip, "lladdr", x.mac, "dev", "eth0", check=True)

    # another source address: no answer, x never sees the packet (dropped at y's port)
    fake_ip, fake_mac = "10.61.0.250", "02:00:00:00:0e:01"
    y.g.sh("ip", "addr", "del", f"{y.ip}/24", "dev", "eth0", check=True)
    y.g.sh("ip", "addr", "add", f"{fake_ip}/24", "dev", "eth0", check=True)
    answered: list[bool] = []

    async def ping_x(source: str | None = None) -> None:
        answered.append(await pings(y, x.ip, count=1, source=source))

    seen = await sniffing(x, 1.3, ping_x())
    assert answered == [False] and not any(fake_ip in f for f in seen), seen
    y.g.sh("ip", "addr", "flush", "dev", "eth0", check=True)
    y.g.sh("ip", "addr", "add", f"{y.ip}/24", "dev", "eth0", check=True)
    y.g.sh("ip", "neigh", "replace", x.ip, "lladdr", x.mac, "dev", "eth0", check=True)
    seen = await sniffing(x, 1.3, ping_x())  # the sniffer sees the genuine ones
    assert answered[1:] == [True] and (y.mac, "ip", y.ip) in seen, seen
    # another MAC: the same
    y.g.sh("ip", "link", "set", "eth0", "address", fake_mac, check=True)
    seen = await sniffing(x, 1.3, ping_x())
    assert answered[2:] == [False] and not any(fake_mac in f for f in seen), seen
    y.g.sh("ip", "link", "set", "eth0", "address", y.mac, check=True)
    assert await pings(y, x.ip)

    # ARP replies claiming x's address (poisoning z's cache) never reach z; y's own do
    arp = gexec(y, sys.executable, "-c", ARP_REPLY, y.mac, z.mac, z.ip, x.ip, y.ip)
    seen = await sniffing(z, 1.0, arp)
    assert (y.mac, "arp", y.ip) in seen, seen  # the legitimate one came through
    assert (y.mac, "arp", x.ip) not in seen, seen

    # an extra address: dropped until it is an allowed address pair of y's NIC
    extra = "10.61.0.240"
    y.g.sh("ip", "addr", "add", f"{extra}/32", "dev", "eth0", check=True)
    seen = await sniffing(x, 1.3, ping_x(extra))
    assert answered[3:] == [False] and not any(extra in f for f in seen), seen
    r = await lab.c.patch(f"/vms/sy/nics/{y.nic['id']}",
                          json={"allowed_pairs": [{"cidr": f"{extra}/32"}]})  # fmt: skip
    await lab.ok(r)
    await lab.settle()
    x.g.sh("ip", "neigh", "flush", "all")
    t0 = time.monotonic()
    while not await pings(y, x.ip, count=1, source=extra):
        assert time.monotonic() - t0 < 5, "the allowed pair did not take effect"
    print(f"\nallowed pair: {extra} answered after {time.monotonic() - t0:.3f} s")
    # and back: without the pair the address is dropped again
    await lab.ok(await lab.c.patch(f"/vms/sy/nics/{y.nic['id']}", json={"allowed_pairs": []}))
    await lab.settle()
    assert not await pings(y, x.ip, count=1, source=extra)
    assert await pings(y, x.ip)


async def test_deleting_a_vm_removes_its_flows_and_dhcp_entry(lab: Lab) -> None:
    vx = [{"port_group": "vx", "security_groups": ["pingable"]}]
    (keep,) = await lab.vm("keep", "b", vx)
    (gone,) = await lab.vm("gone", "b", vx)
    plane = lab.planes["b"]
    (seg,) = lab.state("b").dhcp
    hosts_file = plane.dhcp.paths(seg.port_group_id).hosts
    assert gone.mac in lab.flows("b") and gone.mac in hosts_file.read_text()
    assert await pings(keep, gone.ip)

    await lab.ok(await lab.c.delete("/vms/gone"))
    await lab.settle()
    await plane.refresh()
    assert gone.nic["port"] not in {p.port for p in lab.state("b").ports}
    flows = lab.flows("b")
    assert gone.mac not in flows and keep.mac in flows
    text = hosts_file.read_text()
    assert gone.mac not in text and keep.mac in text
    assert not await pings(keep, gone.ip, count=1)
    # the remaining VM still gets its address
    lease = await asyncio.to_thread(dhcp_request, keep.g, 4, 1)
    assert lease is not None and lease["ip"] == keep.ip
