"""VM NICs through REST on a whole stack (server + libvirt agent + the system Open vSwitch) with
two real TCG guests on a flat port group: each guest's DHCP client gets the address IPAM
allocated from the host's own dnsmasq, through the firewall pipeline; a security group lets
ICMP in, so the guests ping each other; a NIC hot-plugged into a running guest through REST
shows up as eth1 and gets its address, and goes when unplugged; taking the rule away stops
the ping within 2 s (the flows
the controller pushes); deleting a VM returns its address and takes its flows away; with the
server gone, the other guest still reaches the host's DHCP server through the flows it left.

The agent gets a bridge of its own (``network_bridge``) and the switch's uplink is one end of a
veth pair made here, so nothing of the machine's own networking is touched.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.libvirt.libvirt_itest import remove_domain
from tests.integration.libvirt.test_libvirt_volumes import Guest, until
from tests.integration.libvirt.test_stack_volumes import finished
from tests.support.ovs import SystemOvs
from tests.support.stack import api_client, running_stack, upload_image

pytestmark = pytest.mark.libvirt


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _run(*args: str) -> None:
    subprocess.run(args, check=False, capture_output=True)


async def test_two_guests_get_their_addresses_and_talk_under_a_security_group(
    workdir: Path, test_image: Path, system_conn: Any, system_ovs: SystemOvs
) -> None:
    tag = secrets.token_hex(3)
    bridge, uplink = f"cbi-{tag}", f"cup-{tag}"
    had_uplink_bridge = "br-uplink" in system_ovs.vsctl("list-br").split()
    netns_before = set(_netns())
    subprocess.run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", f"cuq-{tag}"],  # noqa: ASYNC221
                   check=True)  # fmt: skip
    _run("ip", "link", "set", uplink, "up")
    started = time.monotonic()
    overrides = {"network_bridge": bridge}
    vm_ids: list[str] = []
    try:
        async with running_stack(workdir, driver="libvirt", agent_overrides=overrides) as stack, api_client(stack) as c:  # fmt: skip
            await upload_image(c, "tiny", test_image)
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            body: dict[str, Any] = {"name": "sw", "clusters": [cluster], "uplink": uplink}
            await finished(c, await c.post("/switches", json=body))
            await finished(
                c, await c.post("/port-groups", json={"name": "pg", "switch": "sw", "type": "flat"})
            )
            body = {"name": "sn", "port_group": "pg", "cidr": "10.77.0.0/24"}
            await finished(c, await c.post("/subnets", json=body))
            rules = [{"direction": "ingress", "protocol": "icmp"}]
            body = {"name": "pingable", "rules": rules, "intra_group": False}
            await finished(c, await c.post("/security-groups", json=body))

            guests: dict[str, Guest] = {}
            for name in ("g1", "g2"):
                vm = {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 256,
                      "nics": [{"port_group": "pg", "security_groups": ["pingable"]}]}  # fmt: skip
                r = await c.post("/vms", json=vm)
                vm_id = r.json()["target_id"]
                vm_ids.append(vm_id)
                await finished(c, r, timeout=180)
                dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm_id}")
                guests[name] = Guest(dom)
            for guest in guests.values():
                await asyncio.to_thread(guest.wait_for_agent, 120)
            booted = time.monotonic()

            ips = {}
            for name, guest in guests.items():
                (nic,) = (await c.get(f"/vms/{name}/nics")).json()
                ips[name] = nic["ips"][0]
                want = ips[name]

                async def leased(g: Guest = guest, ip: str = want) -> bool:
                    out = await asyncio.to_thread(g.sh, "ip -4 -o addr show eth0 || true")
                    return f" {ip}/24 " in out

                await until(leased, f"{name} to get {want} by DHCP", timeout=60)
            assert ips["g1"] != ips["g2"]

            async def pings(src: str, dst: str) -> bool:
                out = await asyncio.to_thread(
                    guests[src].sh, f"ping -c 1 -W 1 {ips[dst]} >/dev/null && echo ok || echo no"
                )
                return out == "ok"

            await until(lambda: pings("g1", "g2"), "g1 to ping g2", timeout=20)
            assert await pings("g2", "g1")

            # hot-plug a second NIC into the running g1: the guest sees eth1 and gets its address
            op = await finished(c, await c.post("/vms/g1/nics", json={"port_group": "pg"}))
            assert op["type"] == "vm.nic.add"
            second = (await c.get("/vms/g1/nics/1")).json()

            async def has_eth1() -> bool:
                out = await asyncio.to_thread(guests["g1"].sh, "ls /sys/class/net")
                return "eth1" in out.split()

            await until(has_eth1, "the guest to see eth1", timeout=30)
            dhcp = "udhcpc -i eth1 -n -q -t 5 -T 1 -s /usr/share/udhcpc/default.script >/dev/null"
            await asyncio.to_thread(guests["g1"].sh, f"ip link set eth1 up; {dhcp}; true")
            out = await asyncio.to_thread(guests["g1"].sh, "ip -4 -o addr show eth1 || true")
            assert f" {second['ips'][0]}/24 " in out, out
            op = await finished(c, await c.delete("/vms/g1/nics/1"), timeout=60)
            assert op["type"] == "vm.nic.remove"

            async def no_eth1() -> bool:
                return not await has_eth1()

            await until(no_eth1, "eth1 to go", timeout=30)
            assert len((await c.get("/vms/g1/nics")).json()) == 1

            group = (await c.get("/security-groups/pingable")).json()
            rule_id = group["rules"][0]["id"]
            await finished(c, await c.delete(f"/security-groups/pingable/rules/{rule_id}"))
            t0 = time.monotonic()

            async def blocked() -> bool:
                return not await pings("g1", "g2")

            await until(blocked, "the ping to stop", timeout=10)
            took = time.monotonic() - t0
            assert took < 2.0 + 1.0, took  # 2 s, plus the 1 s ping timeout of the last try

            # g2 deleted: its address returns, its flows go
            g2_ip = ips["g2"]
            await finished(c, await c.delete("/vms/g2"), timeout=120)
            host_id = (await c.get("/hosts")).json()["items"][0]["id"]
            await stack.server.services.agents.net_sync.settle(host_id)
            page = (await c.get("/subnets/sn/allocations")).json()
            items = page["items"] if isinstance(page, dict) else page
            assert g2_ip not in [a["address"] for a in items]
            flows = system_ovs.ofctl("--no-stats", "dump-flows", bridge)
            assert f"{g2_ip}," not in flows and ips["g1"] in flows

            # the server goes away: g1 still reaches the host's DHCP server through the flows
            plane = stack.agent.runtimes[""].network
            assert plane is not None and plane.state is not None
            server_ip = str(plane.state.dhcp[0].subnets[0].server_address)
            probe = f"ping -c 1 -W 1 {server_ip} >/dev/null && echo ok || echo no"
            assert await asyncio.to_thread(guests["g1"].sh, probe) == "ok"
            listener, stack.server.listener = stack.server.listener, None
            assert listener is not None
            await listener.stop()
            with pytest.raises(httpx.HTTPError):
                await c.get("/hosts", timeout=2)
            for _ in range(3):
                await asyncio.sleep(1)
                assert await asyncio.to_thread(guests["g1"].sh, probe) == "ok"
            print(f"booted in {booted - started:.1f} s, rule removal took effect in {took:.2f} s")
    finally:
        for vm_id in vm_ids:
            remove_domain(system_conn, f"corral-{vm_id}")
        _run("ovs-vsctl", "--if-exists", "del-br", bridge)
        if not had_uplink_bridge:
            _run("ovs-vsctl", "--if-exists", "del-br", "br-uplink")
        _run("ip", "link", "del", uplink)
        _run("pkill", "-f", f"dnsmasq.*{workdir}")
        for ns in set(_netns()) - netns_before:  # the DHCP service's, left with the server gone
            if ns.startswith("cdhcp-"):
                _run("ip", "netns", "del", ns)
