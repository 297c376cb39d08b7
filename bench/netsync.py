"""How long a security-group rule change takes to reach the hosts (issue 5: "within 2 s").

Server and simulator agents run in this process (``corral.up.start_stack``, 10 simulated hosts,
each with a ``SimulatedNetworkPlane``: it validates and stores what the server pushes, so the
server's whole path is real — the REST call, the host states computed from the database
(segments, DHCP entries, every NIC's flows compiled from its groups) and the ``network.apply``
tasks over HTTP — and only Open vSwitch is left out). A group of ``RULES`` rules is on one NIC of
each of ``VMS`` VMs spread over the hosts.

- ``netsync.rule_change_10_hosts``: from the REST call that adds a rule until every one of the
  10 hosts holds flows with it, median of K changes (K = 5, ``--quick``: 2). Baseline: the same
  with a group used on one host only (the cost of one host's computation and push); the ratio
  shows how the fan-out scales (pushes to the hosts run in parallel).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import BenchContext, Figure, make_qcow2, median, ok, upload_image

NAME = "netsync"
TARGET = "<= 2 s on 10 hosts"
HOSTS = 10
RULES = 100
PASSWORD = "bench-admin-password-123"


def _holds(plane: Any, port: int) -> bool:
    state = plane.state
    return state is not None and any(
        f"tp_dst={port}," in f or f.endswith(f"tp_dst={port}") for p in state.ports for f in p.flows
    )


async def _change(c: httpx.AsyncClient, group: str, planes: list[Any], port: int) -> float:
    """Seconds from adding a rule for ``port`` until every plane holds it (then removed)."""
    t0 = time.perf_counter()
    rule = {"direction": "ingress", "protocol": "tcp", "port_min": port}
    op = await ok(c, "POST", f"/security-groups/{group}/rules", json=rule)
    while not all(_holds(p, port) for p in planes):
        if time.perf_counter() - t0 > 30:
            raise RuntimeError(f"rule for port {port} not on every host after 30 s")
        await asyncio.sleep(0.002)
    took = time.perf_counter() - t0
    await ok(c, "DELETE", f"/security-groups/{group}/rules/{op['target_id']}")
    return took


async def run(ctx: BenchContext) -> list[Figure]:
    from corral.up import start_stack

    rounds = 2 if ctx.quick else 5
    vms = HOSTS * (1 if ctx.quick else 3)
    stack = await start_stack(
        data_dir=ctx.workdir / "netsync", port=0, agent_port=0, host="127.0.0.1", tls=False,
        driver="simulator", sim_hosts=HOSTS, server_overrides={"admin_password": PASSWORD},
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1", timeout=120) as c:
            r = await c.post("/auth/login", json={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            c.headers["Authorization"] = f"Bearer {r.json()['token']}"
            await upload_image(c, "tiny", make_qcow2(ctx.workdir / "netsync.qcow2"))
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            await ok(c, "POST", "/switches", json={"name": "sw", "clusters": [cluster]})
            body = {"name": "pg", "switch": "sw", "type": "vlan", "segment_id": 10}
            await ok(c, "POST", "/port-groups", json=body)
            await ok(
                c,
                "POST",
                "/subnets",
                json={"name": "sn", "port_group": "pg", "cidr": "10.50.0.0/16"},
            )
            rules = [
                {"direction": "ingress", "protocol": "tcp", "port_min": 10000 + i}
                for i in range(RULES)
            ]
            for g in ("all", "one"):
                await ok(c, "POST", "/security-groups", json={"name": g, "rules": rules})
            hosts = (await c.get("/hosts?limit=100")).json()["items"]
            planes = {
                h["id"]: rt.network
                for h in hosts
                for path, rt in stack.agent.runtimes.items()
                if h["url"].rstrip("/").endswith(path)
            }
            ids = sorted(planes)
            ctx.say(f"{vms} VMs with a NIC in a group of {RULES} rules on {len(ids)} hosts")
            for i in range(vms):
                body = {"name": f"v{i}", "image": "tiny", "cpus": 1, "memory_mb": 64,
                        "start": False, "host": ids[i % len(ids)],
                        "nics": [{"port_group": "pg", "security_groups": ["all"]}]}  # fmt: skip
                await ok(c, "POST", "/vms", json=body)
            body = {"name": "solo", "image": "tiny", "cpus": 1, "memory_mb": 64, "start": False,
                    "host": ids[0], "nics": [{"port_group": "pg", "security_groups": ["one"]}]}  # fmt: skip
            await ok(c, "POST", "/vms", json=body)
            everywhere = [planes[h] for h in ids]
            times, base = [], []
            for k in range(rounds):
                base.append(await _change(c, "one", [planes[ids[0]]], 20000 + k))
                times.append(await _change(c, "all", everywhere, 30000 + k))
    finally:
        await stack.stop()
    return [
        Figure(
            "netsync.rule_change_10_hosts",
            median(times),
            "s",
            TARGET,
            baseline=median(base),
            baseline_label="the same change on 1 host",
            note=f"{HOSTS} simulated hosts, {vms} NICs, {RULES}-rule group; median of {rounds}",
        )
    ]
