"""Killing the server or the agent in the middle of a ``vm create`` ends all or nothing.

Real processes: ``corral agent`` (simulator, every operation takes ``LATENCY`` seconds) and
``corral server`` (SQLite), set up through REST. A create is started and the server (or the agent)
is SIGKILLed while a given step runs on the agent, as its journal shows, then started again. The
operation must end: succeeded with the VM running, or failed with everything rolled back (no row,
no claim, nothing on the agent: checked through REST and the agent's ``GET /v1/vms``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.integration.test_vm_sim import make_qcow2
from tests.support.orphans import settled
from tests.support.processes import Process, agent_process, server_process

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LATENCY = 1.2
INLINE_WAIT = 0.5  # the agent answers a task inline for this long, then the server polls
PASSWORD = "crash-test-password"
STEPS = ["disk", "define", "start"]


@dataclass
class Cluster:
    server: Process
    agent: Process
    server_dir: Path
    agent_dir: Path
    token: str = ""
    host_id: str = ""

    def api(self) -> httpx.AsyncClient:
        """A new client (the server may have been restarted since the last one)."""
        base = self.server.health_url.removesuffix("/health")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.AsyncClient(base_url=base, headers=headers, timeout=60)

    def agent_api(self) -> httpx.AsyncClient:
        attach = json.loads((self.agent_dir / "sim" / "0" / "attach.json").read_text())
        return httpx.AsyncClient(
            base_url=self.agent.health_url.removesuffix("/health"),
            headers={"Authorization": f"Bearer {attach['token']}"},
            timeout=30,
        )

    def journal(self, op_id: str) -> dict[str, str]:
        """The operation's steps and their states, read from the database file (server down)."""
        db = sqlite3.connect(self.server_dir / "corral.db")
        try:
            rows = db.execute(
                "SELECT name, state FROM workflow_steps WHERE operation_id = ? ORDER BY idx",
                (op_id,),
            ).fetchall()
        finally:
            db.close()
        return dict(rows)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="corral-crash-"))
    cl = Cluster(
        server=server_process(root / "server", admin_password=PASSWORD),
        agent=agent_process(root / "agent", sim_latency=LATENCY),
        server_dir=root / "server",
        agent_dir=root / "agent",
    )
    try:
        await asyncio.gather(cl.agent.start(), cl.server.start())
        async with cl.api() as c:
            r = await c.post("/auth/login", json={"username": "admin", "password": PASSWORD})
            r.raise_for_status()
            cl.token = r.json()["token"]
        async with cl.api() as c:
            assert (await c.post("/zones", json={"name": "z"})).status_code == 202
            r = await c.post("/clusters", json={"name": "c", "zone": "z"})
            assert r.status_code == 202, r.text
            agent_url = cl.agent.health_url.removesuffix("/v1/health")
            r = await c.post("/hosts", json={"url": agent_url, "cluster": "c", "name": "h"})
            assert r.status_code == 202, r.text
            assert (await wait_done(c, r.json()["id"]))["status"] == "succeeded"
            cl.host_id = r.json()["target_id"]
            r = await c.post("/images", json={"name": "tiny"})
            image = make_qcow2(root / "tiny.qcow2")
            r = await c.put(f"/images/{r.json()['target_id']}/data", content=image.read_bytes())
            assert r.status_code == 202, r.text
            assert (await wait_done(c, r.json()["id"]))["status"] == "succeeded"
        yield cl
    finally:
        await cl.server.stop()
        await cl.agent.stop()
        shutil.rmtree(root, ignore_errors=True)


async def wait_done(c: httpx.AsyncClient, op_id: str) -> dict[str, Any]:
    r = await c.get(f"/operations/{op_id}", params={"wait": 60})
    r.raise_for_status()
    op: dict[str, Any] = r.json()
    assert op["status"] in ("succeeded", "failed"), op
    return op


async def start_create(cl: Cluster, name: str) -> tuple[str, str]:
    """Start a create once the host is connected; (operation id, VM id)."""
    async with cl.api() as c:
        host = await settled(
            lambda: c.get(f"/hosts/{cl.host_id}"), lambda r: r.json()["status"] == "connected"
        )
        assert host.json()["status"] == "connected", host.text
        body = {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 256}
        r = await c.post("/vms", json=body)
        assert r.status_code == 202, r.text
        return r.json()["id"], r.json()["target_id"]


async def when_running(cl: Cluster, op_id: str, step: str, after: float) -> None:
    """Return ``after`` seconds after the agent started ``step``'s task (as the agent says)."""
    async with cl.agent_api() as agent:
        task = await settled(
            lambda: agent.get(f"/tasks/{op_id}:{step}"),
            lambda r: r.status_code == 200 and r.json()["state"] == "running",
            stable=0,
            timeout=20,
        )
        assert task.status_code == 200 and task.json()["state"] == "running", task.text
    await asyncio.sleep(after)


async def outcome(cl: Cluster, op_id: str, name: str, vm_id: str) -> dict[str, Any]:
    """Wait for the operation; check the VM is either fully created or fully gone."""
    async with cl.api() as c, cl.agent_api() as agent:
        op = await wait_done(c, op_id)
        vm = await c.get(f"/vms/{name}")
        cap = (await c.get(f"/hosts/{cl.host_id}")).json()["capacity"]
        used = (cap["cpus_used"], cap["memory_mb_used"], cap["disk_gb_used"])
        on_host = {v["vm_id"]: v for v in (await agent.get("/vms")).json()}
        busy = [
            (await c.get("/operations", params={"status": s})).json()["total"]
            for s in ("queued", "running")
        ]
    specs = sorted(p.name for p in (cl.agent_dir / "sim" / "0" / "vms").glob(f"{vm_id}*"))
    assert busy == [0, 0], busy
    if op["status"] == "succeeded":
        assert vm.status_code == 200 and vm.json()["status"] == "running", vm.text
        assert on_host[vm_id]["power_state"] == "running", on_host
        assert used == (1, 256, 1), used
        assert specs == [f"{vm_id}.json"], specs
    else:
        assert vm.status_code == 404, vm.text
        assert vm_id not in on_host, on_host
        assert used == (0, 0, 0), used
        assert specs == [], specs
    return op


@pytest.mark.parametrize("step", STEPS)
async def test_server_killed_while_a_create_step_runs(cluster: Cluster, step: str) -> None:
    name = f"srv-{step}"
    op_id, vm_id = await start_create(cluster, name)
    await when_running(cluster, op_id, step, after=LATENCY / 3)
    await cluster.server.kill()
    assert cluster.journal(op_id)[step] == "started"  # killed while the step ran
    await cluster.server.start()
    op = await outcome(cluster, op_id, name, vm_id)
    assert op["status"] == "failed", op  # before the point of no return: rolled back
    assert op["error"]["context"]["reason"] == "interrupted", op


async def test_server_killed_during_a_rollback_and_during_its_recovery(cluster: Cluster) -> None:
    """The start fails; the server is killed while the rollback runs, and again while the
    restarted server finishes that rollback."""
    async with cluster.agent_api() as agent:
        r = await agent.post("/debug/faults", json={"op": "vm.start"})
        assert r.status_code == 200, r.text
    op_id, vm_id = await start_create(cluster, "srv-rollback")
    journal = await settled(
        lambda: asyncio.to_thread(cluster.journal, op_id),
        lambda j: j.get("start") == "failed",
        stable=0,
        timeout=20,
    )
    assert journal.get("start") == "failed", journal  # the rollback (LATENCY per undo) began
    await asyncio.sleep(LATENCY / 3)
    await cluster.server.kill()
    journal = cluster.journal(op_id)
    assert journal["start"] == "failed" and "done" in journal.values(), journal  # rolling back
    await cluster.server.start()
    await asyncio.sleep(LATENCY / 2)
    await cluster.server.kill()
    await cluster.server.start()
    op = await outcome(cluster, op_id, "srv-rollback", vm_id)
    assert op["status"] == "failed", op


@pytest.mark.parametrize("step", STEPS)
async def test_agent_killed_while_a_create_step_runs(cluster: Cluster, step: str) -> None:
    """Killed after answering the task "running": the agent fails the interrupted task when it
    comes back (callback), the server rolls back."""
    name = f"agent-{step}"
    op_id, vm_id = await start_create(cluster, name)
    await when_running(cluster, op_id, step, after=INLINE_WAIT + 0.2)  # answered "running"
    await cluster.agent.kill()
    await cluster.agent.start()
    op = await outcome(cluster, op_id, name, vm_id)
    assert op["status"] == "failed", op
    assert op["error"]["code"] == "agent_error" and "restarted" in op["error"]["message"], op


async def test_agent_killed_while_answering_the_task(cluster: Cluster) -> None:
    """Killed while the server waits for the inline answer: the step fails (agent unreachable or
    task interrupted) and the rollback, retried until the agent is back, completes."""
    op_id, vm_id = await start_create(cluster, "agent-inline")
    await when_running(cluster, op_id, "define", after=0)
    await cluster.agent.kill()
    await cluster.agent.start()
    op = await outcome(cluster, op_id, "agent-inline", vm_id)
    assert op["status"] == "failed", op


async def test_agent_down_for_a_while_during_a_create(cluster: Cluster) -> None:
    """The agent is killed while it runs a step and comes back 12 s later: the server waits for
    it (the task id makes asking again safe: ``engine.UNDO_UNREACHABLE_S``) and then rolls back
    completely."""
    name = "agent-down"
    op_id, vm_id = await start_create(cluster, name)
    try:
        await when_running(cluster, op_id, "define", after=0)
        await cluster.agent.kill()
        await asyncio.sleep(12)  # the undo of define fails for good ~7 s after the kill
        await cluster.agent.start()
        op = await outcome(cluster, op_id, name, vm_id)
        assert op["status"] == "failed", op
    finally:
        if cluster.agent.popen is None:
            await cluster.agent.start()
        async with cluster.api() as c:  # whatever was left is known and deletable
            op = await wait_done(c, op_id)
            if (await c.get(f"/vms/{name}")).status_code == 200:
                r = await c.delete(f"/vms/{name}")
                assert (await wait_done(c, r.json()["id"]))["status"] == "succeeded"
