"""(b) Sustained create→running throughput with 1,000 simulated hosts, through the REST API.

Corral runs as a user would run it: ``corral server`` + ``corral agent --driver simulator
--sim-hosts N`` (two processes, hosts added with ``POST /hosts``), and ``corral up --driver simulator
--sim-hosts N`` (one process). ``CLIENTS`` concurrent clients each create a VM (``POST /vms``), wait
for its operation (long-poll) and start over; the figure is VMs whose ``vm.create`` succeeded per
second, over the middle 80 % of completions (start-up and drain excluded). Baselines of the same run:
the same flow with 10 hosts, and the raw simulator driver (disk + define + start per VM, in-process).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import (
    BenchContext,
    Figure,
    Proc,
    api,
    make_qcow2,
    ok,
    start_agent,
    start_server,
    start_up,
    upload_image,
)
from corral.util.http1 import Http1Client

NAME = "throughput"
TARGET = ">= 100 VMs/s on 2 cores"
CLIENTS = 64


async def _add_hosts(c: httpx.AsyncClient, agent_url: str, n: int) -> None:
    await ok(c, "POST", "/zones", json={"name": "default"})
    await ok(c, "POST", "/clusters", json={"name": "default", "zone": "default"})
    sem = asyncio.Semaphore(16)

    async def add(i: int) -> None:
        async with sem:
            body = {"url": f"{agent_url}/sim/{i}", "cluster": "default", "name": f"sim-{i}"}
            await ok(c, "POST", "/hosts", json=body)

    await asyncio.gather(*(add(i) for i in range(n)))


async def _create_loop(c: httpx.AsyncClient, image: str, total: int, clients: int) -> list[float]:
    """Completion times (monotonic) of the VMs created; raises if one fails.

    The clients use Corral's light HTTP client (``corral.util.http1``), not httpx: they share the
    machine's 2 cores with Corral, and httpx costs ~5x more CPU per request than the server's
    side of it would leave room for."""
    done: list[float] = []
    counter = iter(range(total))
    base = str(c.base_url).rstrip("/")
    http = Http1Client(
        max_connections=clients + 5,
        timeout=300,
        headers={"Authorization": c.headers["Authorization"], "Content-Type": "application/json"},
    )

    async def client() -> None:
        for i in counter:
            body = {"name": f"vm-{i}", "image": image, "cpus": 1, "memory_mb": 64, "disk_gb": 1}
            r = await http.request("POST", f"{base}/vms", content=json.dumps(body).encode())
            if r.status != 202:
                raise RuntimeError(f"create vm-{i}: {r.status} {r.text}")
            op = json.loads(r.content)
            while op["status"] not in ("succeeded", "failed", "cancelled"):
                r = await http.request("GET", f"{base}/operations/{op['id']}?wait=120")
                op = json.loads(r.content)
            if op["status"] != "succeeded":
                raise RuntimeError(f"create vm-{i}: {op}")
            done.append(time.monotonic())

    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await http.aclose()
    return done


def _rate(done: list[float], started: float) -> float:
    """VMs/s over the middle 80 % of completions (all of them when there are few)."""
    done = sorted(done)
    if len(done) < 20:
        return len(done) / (done[-1] - started)
    lo, hi = len(done) // 10, len(done) * 9 // 10
    return (hi - lo) / (done[hi] - done[lo])


def _cpu(procs: list[Proc], seconds: float) -> float:
    """CPU used by ``procs`` (and children) over ``seconds``, in cores."""
    ps = [psutil.Process(p.pid) for p in procs]

    def total() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in ps)

    before = total()
    time.sleep(seconds)
    return (total() - before) / seconds


async def measure(
    ctx: BenchContext, *, mode: str, hosts: int, vms: int, tag: str
) -> tuple[float, float, dict[str, Any]]:
    """(VMs/s, idle CPU cores of Corral, details) for ``mode`` ``split`` or ``up``."""
    work = ctx.workdir / f"{tag}-{mode}-{hosts}"
    work.mkdir()
    procs: list[Proc] = []
    try:
        t0 = time.monotonic()
        if mode == "split":
            server, url, password = start_server(work / "server")
            procs.append(server)
            agent, agent_url = start_agent(work / "agent", driver="simulator", sim_hosts=hosts)
            procs.append(agent)
        else:
            up, url, password = start_up(work / "up", driver="simulator", sim_hosts=hosts)
            procs.append(up)
        async with api(url, password, connections=CLIENTS + 10) as c:
            if mode == "split":
                await _add_hosts(c, agent_url, hosts)
            setup_s = time.monotonic() - t0
            r = await c.get("/hosts", params={"limit": 1, "status": "connected"})
            connected = r.json()["total"]
            await upload_image(c, "tiny", make_qcow2(work / "tiny.qcow2"))
            await asyncio.sleep(2)  # let the first full heartbeats (with facts) settle
            idle = await asyncio.to_thread(_cpu, procs, 3.0)
            ctx.say(f"{mode}/{hosts} hosts: setup {setup_s:.1f} s, {connected} connected, "
                    f"idle CPU {idle:.2f} cores; creating {vms} VMs with {CLIENTS} clients")  # fmt: skip
            started = time.monotonic()
            done = await _create_loop(c, "tiny", vms, CLIENTS)
            rate = _rate(done, started)
            ctx.say(f"{mode}/{hosts} hosts: {len(done)} VMs in {done[-1] - started:.1f} s "
                    f"-> {rate:.1f} VMs/s")  # fmt: skip
        return rate, idle, {"setup_s": setup_s}
    finally:
        for p in reversed(procs):
            p.stop()


async def raw_driver_rate(n: int) -> float:
    """Creates/s of the simulator drivers alone: disk, define, start of ``n`` VMs, in-process."""
    from corral.agent.compute.simulator import SimHost, simulated_host
    from corral.api.agent import ImageRef, VmSpec

    driver, pool = simulated_host(SimHost(name="raw", cpus=100_000, memory_mb=10**8, disk_gb=10**7))
    await driver.open(lambda ev: None)
    image = ImageRef(id="img", sha256="", size_bytes=1, virtual_size_bytes=1, format="qcow2",
                     download_path="/x")  # fmt: skip

    async def fetch(image: ImageRef, dest: Path) -> None:
        return None

    t0 = time.perf_counter()
    for i in range(n):
        vm_id = f"{i:032x}"
        path = await pool.create_vm_disk(vm_id, image, 1, fetch)
        spec = VmSpec(vm_id=vm_id, name=f"vm-{i}", cpus=1, memory_mb=64, disk_gb=1,
                      vnc_password="password")  # fmt: skip
        await driver.define(spec, path)
        await driver.start(vm_id)
    rate = n / (time.perf_counter() - t0)
    await driver.close()
    return rate


async def run(ctx: BenchContext) -> list[Figure]:
    hosts = 20 if ctx.quick else 1000
    vms = 100 if ctx.quick else 3000
    base_vms = 100 if ctx.quick else 1000
    raw = await raw_driver_rate(2000 if ctx.quick else 20000)
    base, _, _ = await measure(ctx, mode="split", hosts=10, vms=base_vms, tag="base")
    split, split_idle, _ = await measure(ctx, mode="split", hosts=hosts, vms=vms, tag="big")
    up, up_idle, _ = await measure(ctx, mode="up", hosts=hosts, vms=vms, tag="big")
    label = "same flow, 10 hosts"
    return [
        Figure("throughput.split", split, "VMs/s", TARGET, base, label,
               note=f"{hosts} hosts, server + agent processes; idle CPU {split_idle:.2f} cores"),
        Figure("throughput.up", up, "VMs/s", TARGET, base, label,
               note=f"{hosts} hosts, corral up (one process); idle CPU {up_idle:.2f} cores"),
        Figure("throughput.raw_simulator_driver", raw, "VMs/s", "(baseline: driver calls only)"),
    ]  # fmt: skip
