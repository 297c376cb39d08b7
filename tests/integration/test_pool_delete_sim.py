"""The cascading pool delete (``storage_pool.delete``) when the agent keeps failing, through REST
with simulator agents: the volumes deleted before the failure are gone for good (files, snapshots,
rows, quota), the one that failed and those after it are left in ``error`` with everything they
had, the pool stays with its clusters, nothing else is touched; deleting again once the fault is
gone finishes the job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import PoolRef
from corral.server.db.tables import OperationRow
from corral.server.workflows.engine import FORWARD_ATTEMPTS
from corral.up import Stack
from tests.integration.identity.admin import done, refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Env:
    stack: Stack
    c: httpx.AsyncClient
    tmp: Path
    runtimes: dict[str, HostRuntime]  # by host id
    hosts: list[str]  # host ids: vm0 runs on the first, vm1 on the second

    def backend(self, host_id: str, pool_id: str) -> SimulatedBackend:
        b = self.runtimes[host_id].backends.for_pool(PoolRef(id=pool_id, type="local", settings={}))
        assert isinstance(b, SimulatedBackend)
        return b

    def on_pool(self, host_id: str, pool_id: str) -> dict[str, int]:
        return dict(self.backend(host_id, pool_id).volumes(pool_id))

    async def op(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        return await wait_op(self.c, r.json())

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        op = await self.op(r)
        assert op["status"] == "succeeded", op
        return op

    async def get(self, path: str) -> dict[str, Any]:
        r = await self.c.get(path)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def quota(self, project_id: str) -> tuple[int, int]:
        """(volume_gb used, snapshots used) of the project."""
        q = await self.get(f"/projects/{project_id}/quota")
        return q["volume_gb"]["used"], q["snapshots"]["used"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("pool-delete-sim")
    async with running_stack(tmp, sim_hosts=2) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        hosts = (await c.get("/hosts", params={"sort": "name"})).json()["items"]
        runtimes = {
            h["id"]: rt
            for h in hosts
            for path, rt in stack.agent.runtimes.items()
            if h["url"].rstrip("/").endswith(path)
        }
        assert len(runtimes) == 2
        e = Env(stack, c, tmp, runtimes, [h["id"] for h in hosts])
        for i, host_id in enumerate(e.hosts):
            body = {"name": f"vm{i}", "image": "tiny", "cpus": 1, "memory_mb": 128,
                    "host": host_id}  # fmt: skip
            await e.ok(await c.post("/vms", json=body))
        yield e


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.stack.server.services.engine.faults.clear()
    for rt in env.runtimes.values():
        rt.faults.clear()
    for v in (await env.c.get("/volumes", params={"limit": 1000})).json()["items"]:
        for a in v["attachments"]:
            await env.op(await env.c.post(f"/volumes/{v['id']}/detach", params={"vm": a["vm_id"]}))
        await env.op(await env.c.delete(f"/volumes/{v['id']}"))
    for p in (await env.c.get("/storage-pools")).json()["items"]:
        await env.c.patch(f"/storage-pools/{p['id']}", json={"state": "maintenance"})
        await env.op(await env.c.delete(f"/storage-pools/{p['id']}"))


async def _pool(env: Env, name: str) -> str:
    """A local pool on the stack's cluster, reached by both hosts; its id."""
    cluster = (await env.c.get("/clusters")).json()["items"][0]["name"]
    body = {"name": name, "type": "local", "settings": {"path": str(env.tmp / name)},
            "clusters": [cluster]}  # fmt: skip
    pool_id: str = done(await env.c.post("/storage-pools", json=body))["target_id"]
    for _ in range(200):
        if (await env.get(f"/storage-pools/{name}"))["hosts"]["ok"] >= 2:
            return pool_id
        await asyncio.sleep(0.05)  # the pool sync is asynchronous
    raise AssertionError(f"pool {name} not reached by both hosts")


async def _volume(
    env: Env, name: str, pool: str, *, vm: str | None, snapshot: bool = False
) -> dict[str, Any]:
    """A volume on ``pool``; with ``vm`` created on the pool (on that VM's host) by an attach,
    with a snapshot if asked, and detached again; without, a record only."""
    if vm is None:
        done(await env.c.post("/volumes", json={"name": name, "size_gb": 1, "pool": pool}))
    else:
        body = {"name": name, "size_gb": 2, "pool": pool, "vm": vm}
        await env.ok(await env.c.post("/volumes", json=body))
        if snapshot:
            body = {"name": f"{name}-s1"}
            await env.ok(await env.c.post(f"/volumes/{name}/snapshots", json=body))
        await env.ok(await env.c.post(f"/volumes/{name}/detach"))
    return await env.get(f"/volumes/{name}")


async def _op_volumes(env: Env, op_id: str) -> list[str]:
    """The volume ids of a ``storage_pool.delete`` operation, in the order it deletes them."""
    async with env.stack.server.services.sessionmaker() as s:
        row = await s.get(OperationRow, op_id)
        assert row is not None
        return [vid for vid, _host in row.params["volumes"]]


@pytest.mark.parametrize(
    "fault", ["volume.delete", "agent.volume.delete", "volume.delete_file", "agent.snapshot.delete"]
)
async def test_failed_cascade_leaves_the_rest_in_error_and_a_retry_finishes(
    env: Env, fault: str
) -> None:
    host0, host1 = env.hosts
    pool_id = await _pool(env, "cas")
    other_id = await _pool(env, "other")
    cluster_ids = (await env.get("/storage-pools/cas"))["cluster_ids"]
    # a: on host0 with a snapshot; b: on host1 (whose agent fails) with a snapshot; c: a record
    vols = {
        "a": await _volume(env, "a", "cas", vm="vm0", snapshot=True),
        "b": await _volume(env, "b", "cas", vm="vm1", snapshot=True),
        "c": await _volume(env, "c", "cas", vm=None),
    }
    by_id = {v["id"]: name for name, v in vols.items()}
    keep = await _volume(env, "keep", "other", vm="vm1", snapshot=True)  # another pool's
    await env.ok(await env.c.post("/volumes/keep/attach", json={"vm": "vm1"}))
    project = vols["a"]["project_id"]
    assert {v["project_id"] for v in vols.values()} == {project}
    quota_before = await env.quota(project)
    assert env.on_pool(host0, pool_id) == {vols["a"]["id"]: 2}
    assert env.on_pool(host1, pool_id) == {vols["b"]["id"]: 2}
    files = {h: dict(env.backend(h, pool_id).files(pool_id)) for h in env.hosts}

    done(await env.c.patch("/storage-pools/cas", json={"state": "maintenance"}))
    env.runtimes[host1].faults.fail_next(fault, times=FORWARD_ATTEMPTS)
    op = await env.op(await env.c.delete("/storage-pools/cas", params={"cascade": "true"}))
    assert (op["type"], op["status"]) == ("storage_pool.delete", "failed"), op
    assert op["error"]["code"] == "injected_fault", op
    assert env.runtimes[host1].faults.pending() == {}  # every attempt reached the agent
    order = [by_id[vid] for vid in await _op_volumes(env, op["id"])]
    assert sorted(order) == ["a", "b", "c"]
    gone, left = order[: order.index("b")], order[order.index("b") :]

    # the pool stays, as it was
    pool = await env.get("/storage-pools/cas")
    assert (pool["state"], pool["cluster_ids"]) == ("maintenance", cluster_ids)
    # the volumes before the failing one are gone with their files and snapshots ...
    for name in gone:
        refused(await env.c.get(f"/volumes/{name}"), 404, "not_found")
        refused(await env.c.get(f"/snapshots/{name}-s1"), 404, "not_found")
        assert vols[name]["id"] not in env.on_pool(host0, pool_id)
    # ... the failing one and those after it are in error, with their snapshots
    for name in left:
        v = await env.get(f"/volumes/{name}")
        assert v["status"] == "error", v
        assert v["error"] == f"pool delete failed: injected failure of {fault}", v
        if v["instantiated"]:
            assert (await env.get(f"/snapshots/{name}-s1"))["volume_id"] == v["id"]
    if "a" in left:  # host0's agent was never asked
        assert env.on_pool(host0, pool_id) == {vols["a"]["id"]: 2}
    if fault in ("volume.delete", "agent.volume.delete"):
        assert env.on_pool(host1, pool_id) == {vols["b"]["id"]: 2}  # b's file was never deleted
        assert dict(env.backend(host1, pool_id).files(pool_id)) == files[host1]
    else:
        assert env.on_pool(host1, pool_id) == {}  # its active file went, a snapshot's did not
    # only the deleted volumes gave their quota back
    sizes = {"a": 2, "b": 2, "c": 1}
    snaps = {"a": 1, "b": 1, "c": 0}
    assert await env.quota(project) == (
        quota_before[0] - sum(sizes[n] for n in gone),
        quota_before[1] - sum(snaps[n] for n in gone),
    )
    assert pool["capacity"]["allocated_gb"] == sum(sizes[n] for n in left)
    # nothing else was touched
    k = await env.get("/volumes/keep")
    assert (k["status"], len(k["attachments"])) == ("in_use", 1)
    assert (await env.get("/snapshots/keep-s1"))["volume_id"] == keep["id"]
    assert env.on_pool(host1, other_id) == {keep["id"]: 2}

    # the fault gone, deleting again continues with what is left, and the pool goes
    env.runtimes[host1].faults.clear()
    op = await env.ok(await env.c.delete("/storage-pools/cas", params={"cascade": "true"}))
    assert op["type"] == "storage_pool.delete"
    assert [by_id[vid] for vid in await _op_volumes(env, op["id"])] == left
    refused(await env.c.get("/storage-pools/cas"), 404, "not_found")
    for name in vols:
        refused(await env.c.get(f"/volumes/{name}"), 404, "not_found")
        refused(await env.c.get(f"/snapshots/{name}-s1"), 404, "not_found")
    assert env.on_pool(host0, pool_id) == {} and env.on_pool(host1, pool_id) == {}
    assert await env.quota(project) == (quota_before[0] - 5, quota_before[1] - 2)
    assert (await env.get("/volumes/keep"))["status"] == "in_use"
    assert env.on_pool(host1, other_id) == {keep["id"]: 2}
