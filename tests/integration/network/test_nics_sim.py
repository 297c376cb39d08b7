"""VM NICs through REST with simulator agents: the server computes each host's network (segments,
DHCP entries, firewall flows) and the agents hold what it pushed (``SimulatedNetworkPlane``
validates it exactly like a real host). A VM with NICs gets its addresses and ports; a rule
change reaches the hosts at once; hot-plug and unplug; deleting returns everything; a failed
create at any step leaves no NIC, address, port, flow or DHCP entry; networks in use cannot be
deleted; a host that lost its state converges through its heartbeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.api.agent import NetworkApply
from corral.server.workflows.engine import FaultPoints
from corral.server.workflows.vm_create import VM_CREATE
from corral.server.workflows.vm_nic import VM_NIC_ADD, VM_NIC_REMOVE
from corral.up import Stack
from tests.integration.identity.admin import done, refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.fault_env import WHEN
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Env:
    stack: Stack
    c: httpx.AsyncClient
    runtimes: dict[str, HostRuntime]  # by host id

    @property
    def faults(self) -> FaultPoints:
        return self.stack.server.services.engine.faults

    def state(self, host_id: str) -> NetworkApply:
        plane = self.runtimes[host_id].network
        assert plane is not None
        return plane.state or NetworkApply(generation=0)

    def everywhere(self) -> dict[str, NetworkApply]:
        return {h: self.state(h) for h in self.runtimes}

    def macs_on_hosts(self) -> set[str]:
        """Every MAC with a DHCP entry on some host, and every port with flows."""
        found: set[str] = set()
        for st in self.everywhere().values():
            for d in st.dhcp:
                found |= set(d.hosts)
            found |= {p.port for p in st.ports}
        return found

    async def op(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        return await wait_op(self.c, r.json())

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        op = await self.op(r)
        assert op["status"] == "succeeded", op
        return op

    async def get(self, path: str) -> Any:
        r = await self.c.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    async def allocations(self, subnet: str) -> list[dict[str, Any]]:
        """The subnet's addresses held by NICs and holds (not the hosts' DHCP servers)."""
        page = await self.get(f"/subnets/{subnet}/allocations?limit=1000")
        items = page["items"] if isinstance(page, dict) else page
        return [a for a in items if a.get("nic_id") or a.get("vm_id")]

    async def settle(self) -> None:
        from corral.server.services import net_sync

        svc = self.stack.server.services
        await net_sync.settle(svc, self.runtimes)


async def _until(check: Any, timeout: float = 5.0) -> float:
    """Seconds until ``check()`` is true (fails after ``timeout``)."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("nics-sim")
    underlay = {"underlay_interface": "ul0", "underlay_address": "10.201.0.1/24"}
    async with (
        running_stack(tmp, sim_hosts=2, agent_overrides=underlay) as stack,
        api_client(stack) as c,
    ):
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        done(await c.post("/switches", json={"name": "sw", "clusters": [cluster]}))
        done(await c.post("/switches", json={"name": "lonely"}))  # on no cluster
        for name, seg, switch in (
            ("pg-a", 100, "sw"),
            ("pg-b", 200, "sw"),
            ("pg-x", 300, "lonely"),
        ):
            body = {"name": name, "switch": switch, "type": "vlan", "segment_id": seg}
            done(await c.post("/port-groups", json=body))
        body = {"name": "pg-vx", "switch": "sw", "type": "vxlan", "segment_id": 7000}
        done(await c.post("/port-groups", json=body))
        body = {
            "name": "sn-a",
            "port_group": "pg-a",
            "cidr": "10.10.0.0/24",
            "dns_servers": ["10.10.0.2"],
        }
        done(await c.post("/subnets", json=body))
        body = {"name": "sn-a6", "port_group": "pg-a", "cidr": "fd00:10::/64"}
        done(await c.post("/subnets", json=body))
        done(
            await c.post(
                "/subnets", json={"name": "sn-b", "port_group": "pg-b", "cidr": "10.20.0.0/24"}
            )
        )
        done(
            await c.post(
                "/subnets", json={"name": "sn-x", "port_group": "pg-x", "cidr": "10.30.0.0/24"}
            )
        )
        rules = [{"direction": "ingress", "protocol": "tcp", "port_min": 80}]
        done(await c.post("/security-groups", json={"name": "web", "rules": rules}))
        done(await c.post("/security-groups", json={"name": "ops"}))
        hosts = (await c.get("/hosts")).json()["items"]
        runtimes = {
            h["id"]: rt
            for h in hosts
            for path, rt in stack.agent.runtimes.items()
            if h["url"].rstrip("/").endswith(path)
        }
        assert all(rt.network is not None for rt in runtimes.values())
        yield Env(stack, c, runtimes)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.faults.clear()
    for vm in (await env.get("/vms?limit=1000"))["items"]:
        await env.ok(await env.c.delete(f"/vms/{vm['id']}"))
    await env.settle()


def _vm(name: str, nics: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 128, "nics": nics, **extra}


async def test_a_vm_with_nics_gets_addresses_ports_dhcp_and_flows(env: Env) -> None:
    nics = [
        {"port_group": "pg-a", "security_groups": ["web", "ops"]},
        {"port_group": "pg-b", "model": "e1000", "ips": ["10.20.0.50"]},
    ]
    await env.ok(await env.c.post("/vms", json=_vm("n1", nics)))
    vm = await env.get("/vms/n1")
    got = await env.get("/vms/n1/nics")
    assert [n["device"] for n in got] == [0, 1]
    a, b = got
    assert a["mac"].startswith("02:") and a["mac"] != b["mac"]
    assert sorted(a["ips"]) == ["10.10.0.2", "fd00:10::2"] or len(a["ips"]) == 2
    assert b["ips"] == ["10.20.0.50"] and b["model"] == "e1000"
    web, ops = [await env.get(f"/security-groups/{n}") for n in ("web", "ops")]
    assert a["security_groups"] == [web["id"], ops["id"]]
    assert (await env.get(f"/vms/n1/nics/{a['mac']}"))["id"] == a["id"]
    assert (await env.get("/vms/n1/nics/1"))["id"] == b["id"]

    st = env.state(vm["host_id"])
    segs = {s.port_group_id: s for s in st.segments}
    pg_a = (await env.get("/port-groups/pg-a"))["id"]
    pg_b = (await env.get("/port-groups/pg-b"))["id"]
    assert set(segs) == {pg_a, pg_b}
    assert (segs[pg_a].segment_id, segs[pg_b].segment_id) == (100, 200)
    assert st.uplink is not None and st.uplink.interface == "eth0"
    dhcp = {d.port_group_id: d for d in st.dhcp}
    entry = dhcp[pg_a].hosts[a["mac"]]
    assert {str(entry.ipv4), str(entry.ipv6)} == set(a["ips"]) and entry.hostname == "n1"
    assert dhcp[pg_b].hosts[b["mac"]].ipv4 is not None
    ports = {p.port: p.flows for p in st.ports}
    assert set(ports) == {a["port"], b["port"]}
    assert any("tp_dst=80" in f for f in ports[a["port"]])  # web's rule
    assert not any("tp_dst=80" in f for f in ports[b["port"]])  # no group: default deny
    # the VM's definition plugs each NIC into its segment's local tag
    spec = env.runtimes[vm["host_id"]].specs.get(vm["id"])
    assert spec is not None
    assert [(n.nic_id, n.mac, n.tag, n.model) for n in spec.spec.nics] == [
        (a["id"], a["mac"], segs[pg_a].local_tag, "virtio"),
        (b["id"], b["mac"], segs[pg_b].local_tag, "e1000"),
    ]
    # each DHCP server got an address of its own in the subnet (not a NIC's)
    servers = {str(sn.server_address) for sn in dhcp[pg_a].subnets}
    assert not servers & set(a["ips"])

    await env.ok(await env.c.delete("/vms/n1"))
    await env.settle()
    assert await env.allocations("sn-a") == [] and await env.allocations("sn-b") == []
    assert not env.macs_on_hosts() & {a["mac"], b["mac"], a["port"], b["port"]}


async def test_a_rule_change_reaches_the_hosts_at_once(env: Env) -> None:
    await env.ok(
        await env.c.post(
            "/vms", json=_vm("r1", [{"port_group": "pg-a", "security_groups": ["ops"]}])
        )
    )
    vm = await env.get("/vms/r1")
    (nic,) = await env.get("/vms/r1/nics")

    def has(port: int) -> bool:
        flows = {p.port: p.flows for p in env.state(vm["host_id"]).ports}[nic["port"]]
        return any(f"tp_dst={port}" in f for f in flows)

    assert not has(2222)
    rule = {"direction": "ingress", "protocol": "tcp", "port_min": 2222}
    done(await env.c.post("/security-groups/ops/rules", json=rule))
    took = await _until(lambda: has(2222), timeout=2.0)
    assert took < 2.0
    group = await env.get("/security-groups/ops")
    rule_id = next(r["id"] for r in group["rules"] if r.get("port_min") == 2222)
    done_op = await env.c.delete(f"/security-groups/ops/rules/{rule_id}")
    assert done_op.status_code in (200, 202), done_op.text
    await _until(lambda: not has(2222), timeout=2.0)


async def test_hot_plug_update_and_unplug(env: Env) -> None:
    await env.ok(await env.c.post("/vms", json=_vm("h1", [])))
    vm = await env.get("/vms/h1")
    assert await env.get("/vms/h1/nics") == []
    op = await env.ok(
        await env.c.post("/vms/h1/nics", json={"port_group": "pg-b", "subnets": ["sn-b"]})
    )
    assert op["type"] == "vm.nic.add"
    (nic,) = await env.get("/vms/h1/nics")
    spec = env.runtimes[vm["host_id"]].specs.get(vm["id"])
    assert spec is not None and [n.nic_id for n in spec.spec.nics] == [nic["id"]]
    assert nic["port"] in {p.port for p in env.state(vm["host_id"]).ports}

    r = await env.c.patch(
        f"/vms/h1/nics/{nic['id']}", json={"security_groups": ["web"], "ingress_default": "allow"}
    )
    assert r.status_code == 202, r.text
    updated = await env.get(f"/vms/h1/nics/{nic['id']}")
    assert updated["ingress_default"] == "allow" and len(updated["security_groups"]) == 1

    def flows() -> list[str]:
        return {p.port: p.flows for p in env.state(vm["host_id"]).ports}.get(nic["port"], [])

    await _until(lambda: any("tp_dst=80" in f for f in flows()), timeout=2.0)
    err = refused(await env.c.delete("/security-groups/web"), 409, "in_use")
    assert err["context"]["vms"] == ["h1"]

    op = await env.ok(await env.c.delete(f"/vms/h1/nics/{nic['id']}"))
    assert op["type"] == "vm.nic.remove"
    assert await env.get("/vms/h1/nics") == []
    assert await env.allocations("sn-b") == []
    spec = env.runtimes[vm["host_id"]].specs.get(vm["id"])
    assert spec is not None and spec.spec.nics == []
    assert nic["port"] not in {p.port for p in env.state(vm["host_id"]).ports}


async def test_bad_nics_are_refused_and_change_nothing(env: Env) -> None:
    await env.ok(
        await env.c.post("/vms", json=_vm("s1", [{"port_group": "pg-b", "ips": ["10.20.0.9"]}]))
    )
    before = await env.allocations("sn-b")
    err = refused(
        await env.c.post("/vms", json=_vm("s2", [{"port_group": "pg-b", "ips": ["10.20.0.9"]}])),
        409,
        "in_use",
    )
    assert err["context"]["reason"] == "address_in_use"
    refused(
        await env.c.post("/vms", json=_vm("s2", [{"port_group": "pg-b", "ips": ["10.99.0.1"]}])),
        422,
        "invalid_input",
    )
    refused(await env.c.post("/vms", json=_vm("s2", [{"port_group": "nope"}])), 404, "not_found")
    refused(
        await env.c.post("/vms", json=_vm("s2", [{"port_group": "pg-a", "subnets": ["sn-b"]}])),
        422,
        "invalid_input",
    )
    refused(
        await env.c.post(
            "/vms", json=_vm("s2", [{"port_group": "pg-b", "security_groups": ["nope"]}])
        ),
        404,
        "not_found",
    )
    mac = (await env.get("/vms/s1/nics"))[0]["mac"]
    err = refused(
        await env.c.post("/vms", json=_vm("s2", [{"port_group": "pg-a", "mac": mac}])),
        409,
        "in_use",
    )
    assert err["context"]["reason"] == "mac_in_use"
    refused(
        await env.c.post(
            "/vms", json=_vm("s2", [{"port_group": "pg-a", "mac": "01:00:5e:00:00:01"}])
        ),
        422,
        "invalid_input",
    )
    # a port group whose switch no host carries
    refused(
        await env.c.post("/vms", json=_vm("s2", [{"port_group": "pg-x"}])), 409, "no_host_available"
    )
    assert [v["name"] for v in (await env.get("/vms"))["items"]] == ["s1"]
    assert await env.allocations("sn-b") == before
    assert await env.allocations("sn-x") == []
    # networks in use are not deleted
    err = refused(await env.c.delete("/port-groups/pg-b"), 409, "in_use")
    err = refused(await env.c.delete("/subnets/sn-b"), 409, "in_use")
    assert err["context"]["vms"]
    cluster = (await env.get("/clusters"))["items"][0]["name"]
    err = refused(await env.c.delete(f"/switches/sw/clusters/{cluster}"), 409, "in_use")
    assert err["context"]["vms"] == ["s1"]


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VM_CREATE.steps for w in WHEN])
async def test_a_failed_create_leaves_no_nic_behind(env: Env, step: str, when: str) -> None:
    env.faults.inject(VM_CREATE.type, step, when)  # type: ignore[arg-type]
    nics = [{"port_group": "pg-a", "security_groups": ["web"]}, {"port_group": "pg-b"}]
    op = await env.op(await env.c.post("/vms", json=_vm("f1", nics)))
    if step in ("record", "claim") or VM_CREATE.is_forward(VM_CREATE.step_index(step)):
        assert op["status"] == "succeeded", op  # done by the request / retried forward
        assert len(await env.get("/vms/f1/nics")) == 2
        return
    assert op["status"] == "failed", op
    await env.settle()
    assert refused(await env.c.get("/vms/f1"), 404, "not_found")
    for sn in ("sn-a", "sn-a6", "sn-b"):
        assert await env.allocations(sn) == [], sn
    for st in env.everywhere().values():
        assert st.ports == [] and all(d.hosts == {} for d in st.dhcp), st


async def test_a_host_that_lost_its_state_converges(env: Env) -> None:
    await env.ok(await env.c.post("/vms", json=_vm("c1", [{"port_group": "pg-a"}])))
    vm = await env.get("/vms/c1")
    plane = env.runtimes[vm["host_id"]].network
    assert plane is not None
    wanted = plane.digest
    plane._state = None  # as an agent whose network.json is gone
    plane._digest = ""
    await _until(lambda: plane.digest == wanted, timeout=15.0)
    (nic,) = await env.get("/vms/c1/nics")
    assert nic["port"] in {p.port for p in env.state(vm["host_id"]).ports}


async def test_clones_get_nics_like_their_source_with_new_macs_and_addresses(env: Env) -> None:
    nics = [{"port_group": "pg-a", "security_groups": ["web"], "ingress_default": "allow"}]
    await env.ok(await env.c.post("/vms", json=_vm("src", nics, start=False)))
    (src,) = await env.get("/vms/src/nics")
    await env.ok(
        await env.c.post("/vms/src/clone", json={"name": "cl", "count": 2, "start": False})
    )
    seen_macs, seen_ips = {src["mac"]}, set(src["ips"])
    for name in ("cl-1", "cl-2"):
        (nic,) = await env.get(f"/vms/{name}/nics")
        assert (nic["port_group_id"], nic["security_groups"], nic["ingress_default"]) == (
            src["port_group_id"], src["security_groups"], "allow"
        )  # fmt: skip
        assert nic["mac"] not in seen_macs and not set(nic["ips"]) & seen_ips
        assert len(nic["ips"]) == len(src["ips"])
        seen_macs.add(nic["mac"])
        seen_ips |= set(nic["ips"])
    await env.settle()
    assert seen_macs - {src["mac"]} <= env.macs_on_hosts()


async def test_vxlan_tunnels_follow_the_vms(env: Env) -> None:
    hosts = sorted(env.runtimes)
    tunnel = {}
    for h in hosts:
        facts = (await env.get(f"/hosts/{h}"))["facts"]
        tunnel[h] = facts["tunnel_ip"]
    assert len(set(tunnel.values())) == 2 and None not in tunnel.values()
    pg = (await env.get("/port-groups/pg-vx"))["id"]

    def remotes(h: str) -> list[str] | None:
        segs = {s.port_group_id: s for s in env.state(h).segments}
        return [str(r) for r in segs[pg].remotes] if pg in segs else None

    await env.ok(await env.c.post("/vms", json=_vm("x1", [{"port_group": "pg-vx"}], host=hosts[0])))
    assert remotes(hosts[0]) == [] and remotes(hosts[1]) is None
    await env.ok(await env.c.post("/vms", json=_vm("x2", [{"port_group": "pg-vx"}], host=hosts[1])))
    await env.settle()
    assert remotes(hosts[0]) == [tunnel[hosts[1]]]
    assert remotes(hosts[1]) == [tunnel[hosts[0]]]
    assert (await env.get("/port-groups/pg-vx"))["mtu"] == 1450
    await env.ok(await env.c.delete("/vms/x2"))
    await env.settle()
    assert remotes(hosts[0]) == [] and remotes(hosts[1]) is None


async def test_the_config_drive_carries_static_addresses_where_no_dhcp_serves(env: Env) -> None:
    import json

    sn = {"name": "sn-static", "port_group": "pg-b", "cidr": "10.21.0.0/24", "dhcp": False,
          "dns_servers": ["10.21.0.53"]}  # fmt: skip
    done(await env.c.post("/subnets", json=sn))
    try:
        nics = [{"port_group": "pg-a"}, {"port_group": "pg-b", "subnets": ["sn-static"]}]
        await env.ok(await env.c.post("/vms", json=_vm("Cfg_1", nics, start=False)))
        vm = await env.get("/vms/Cfg_1")
        a, b = await env.get("/vms/Cfg_1/nics")
        stored = env.runtimes[vm["host_id"]].specs.get(vm["id"])
        assert stored is not None and stored.spec.config_drive is not None
        drive = stored.spec.config_drive
        assert json.loads(drive.meta_data) == {"instance-id": vm["id"], "local-hostname": "cfg-1"}
        assert drive.network_config is not None
        eths = json.loads(drive.network_config)["ethernets"]
        assert eths["eth0"]["match"] == {"macaddress": a["mac"]}
        assert eths["eth0"]["dhcp4"] is True and eths["eth0"]["dhcp6"] is True
        assert eths["eth0"]["routes"] == [{"to": "::/0", "via": "fd00:10::1"}]  # no RAs
        assert "addresses" not in eths["eth0"]
        assert eths["eth1"] == {
            "match": {"macaddress": b["mac"]},
            "set-name": "eth1",
            "mtu": 1500,
            "addresses": [f"{b['ips'][0]}/24"],
            "routes": [{"to": "default", "via": "10.21.0.1"}],
            "nameservers": {"addresses": ["10.21.0.53"]},
        }
        await env.ok(await env.c.delete("/vms/Cfg_1"))
    finally:
        await env.c.delete("/subnets/sn-static")


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VM_NIC_ADD.steps for w in WHEN])
async def test_a_failed_hot_plug_leaves_no_nic_behind(env: Env, step: str, when: str) -> None:
    await env.ok(await env.c.post("/vms", json=_vm("hp", [])))
    vm = await env.get("/vms/hp")
    env.faults.inject(VM_NIC_ADD.type, step, when)  # type: ignore[arg-type]
    body = {"port_group": "pg-b", "security_groups": ["web"]}
    op = await env.op(await env.c.post("/vms/hp/nics", json=body))
    assert op["status"] == "failed", op
    await env.settle()
    assert await env.get("/vms/hp/nics") == []
    assert await env.allocations("sn-b") == []
    stored = env.runtimes[vm["host_id"]].specs.get(vm["id"])
    assert stored is not None and stored.spec.nics == []
    assert env.state(vm["host_id"]).ports == []


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VM_NIC_REMOVE.steps for w in WHEN])
async def test_a_failed_unplug_keeps_the_nic(env: Env, step: str, when: str) -> None:
    await env.ok(await env.c.post("/vms", json=_vm("up", [{"port_group": "pg-b"}])))
    vm = await env.get("/vms/up")
    (nic,) = await env.get("/vms/up/nics")
    env.faults.inject(VM_NIC_REMOVE.type, step, when)  # type: ignore[arg-type]
    op = await env.op(await env.c.delete(f"/vms/up/nics/{nic['id']}"))
    await env.settle()
    if VM_NIC_REMOVE.is_forward(VM_NIC_REMOVE.step_index(step)):
        assert op["status"] == "succeeded", op  # past the point of no return: retried
        assert await env.get("/vms/up/nics") == []
        assert await env.allocations("sn-b") == []
        return
    assert op["status"] == "failed", op
    assert await env.get("/vms/up/nics") == [nic]  # as it was, its address kept
    stored = env.runtimes[vm["host_id"]].specs.get(vm["id"])
    assert stored is not None and [n.nic_id for n in stored.spec.nics] == [nic["id"]]
    assert nic["port"] in {p.port for p in env.state(vm["host_id"]).ports}
