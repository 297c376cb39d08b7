"""Ceph-native snapshots of rbd volumes through REST with a simulator agent: taken live (no
overlay: the image stays the volume's), the tree and the current node, revert of a stopped VM's
volume (``rbd snap rollback``) starting a new branch, delete of any node without a merge (its
children get its parent), quiesce refused, a volume deleted with its snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import PoolRef
from corral.up import Stack
from tests.integration.identity.admin import refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")

POOL = {"name": "ceph", "type": "rbd", "credentials": "AQBzZWNyZXQta2V5LWZvci10ZXN0cw==",
        "settings": {"monitors": ["127.0.0.1:6789"], "pool": "rbd", "user": "admin"}}  # fmt: skip


class Env:
    def __init__(self, stack: Stack, c: httpx.AsyncClient, runtime: HostRuntime) -> None:
        self.stack, self.c, self.runtime = stack, c, runtime

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        op = await wait_op(self.c, r.json())
        assert op["status"] == "succeeded", op
        return op

    async def tree(self, volume: str) -> dict[str, tuple[str | None, bool]]:
        items = (await self.c.get(f"/volumes/{volume}/snapshots")).json()["items"]
        by_id = {i["id"]: i["name"] for i in items}
        return {i["name"]: (by_id.get(i["parent_id"]), i["current"]) for i in items}

    def backend(self) -> SimulatedBackend:
        b = self.runtime.backends.for_pool(PoolRef(id="x", type="rbd", settings={}))
        assert isinstance(b, SimulatedBackend)
        return b


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("rbd-snap-sim")
    async with running_stack(tmp) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        e = Env(stack, c, next(iter(stack.agent.runtimes.values())))
        await e.ok(await c.post("/storage-pools", json={**POOL, "clusters": [cluster]}))
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "loc")},
                "clusters": [cluster]}  # fmt: skip
        await e.ok(await c.post("/storage-pools", json=body))
        await e.ok(await c.post("/vms", json={"name": "vm", "image": "tiny", "cpus": 1,
                                              "memory_mb": 64}))  # fmt: skip
        yield e


async def test_ceph_snapshots_tree_revert_and_delete(env: Env) -> None:
    c = env.c
    await env.ok(await c.post("/volumes", json={"name": "d", "size_gb": 1, "pool": "ceph",
                                                "vm": "vm"}))  # fmt: skip
    vol = (await c.get("/volumes/d")).json()
    image = vol["id"]

    await env.ok(await c.post("/volumes/d/snapshots", json={"name": "s1"}))  # live: the VM runs
    await env.ok(await c.post("/volumes/d/snapshots", json={"name": "s2"}))
    assert await env.tree("d") == {"s1": (None, False), "s2": ("s1", True)}
    s1 = (await c.get("/snapshots/s1")).json()
    assert env.backend().snapshots(vol["pool_id"], image) == {f"snap-{s1['id']}",
        f"snap-{(await c.get('/snapshots/s2')).json()['id']}"}  # fmt: skip
    after = (await c.get("/volumes/d")).json()
    assert (after["status"], after["format"]) == ("in_use", "raw")  # still the same image
    r = await c.post("/volumes/d/snapshots", json={"name": "q", "quiesce": True})
    refused(r, 422, "invalid_input")

    refused(await c.post("/snapshots/s1/revert"), 409, "invalid_state")  # the VM runs
    await env.ok(await c.post("/vms/vm/stop", json={"force": True}))
    await env.ok(await c.post("/snapshots/s1/revert"))
    assert env.backend().calls["volume.snap_rollback"] == 1
    await env.ok(await c.post("/volumes/d/snapshots", json={"name": "s3"}))  # a new branch
    assert await env.tree("d") == {"s1": (None, False), "s2": ("s1", False), "s3": ("s1", True)}

    await env.ok(await c.delete("/snapshots/s1"))  # no merge: its children get its parent
    assert await env.tree("d") == {"s2": (None, False), "s3": (None, True)}
    assert f"snap-{s1['id']}" not in env.backend().snapshots(vol["pool_id"], image)
    await env.ok(await c.post("/vms/vm/start"))

    await env.ok(await c.post("/volumes/d/detach"))
    await env.ok(await c.delete("/volumes/d"))  # with its Ceph snapshots
    assert (await c.get("/snapshots", params={"q": "name=s2"})).json()["items"] == []


@pytest.mark.parametrize("pool", ["ceph", "loc"])
async def test_a_volume_made_from_a_snapshot(env: Env, pool: str) -> None:
    c = env.c
    src = f"src-{pool}"
    body = {"name": src, "size_gb": 2, "pool": pool, "vm": "vm"}
    await env.ok(await c.post("/volumes", json=body))
    await env.ok(await c.post(f"/volumes/{src}/snapshots", json={"name": f"gold-{pool}"}))
    snap = (await c.get(f"/snapshots/gold-{pool}")).json()
    op = await env.ok(await c.post("/volumes", json={"name": f"copy-{pool}", "size_gb": 3,
                                                      "pool": pool, "snapshot": snap["id"]}))  # fmt: skip
    assert op["type"] == "volume.clone"
    copy = (await c.get(f"/volumes/copy-{pool}")).json()
    assert (copy["status"], copy["instantiated"], copy["size_gb"]) == ("available", True, 3)
    on_pool = env.runtime.backends.for_pool(PoolRef(id=copy["pool_id"], type="local", settings={}))
    assert isinstance(on_pool, SimulatedBackend)
    assert on_pool.volumes(copy["pool_id"])[copy["id"]] == 3
    if pool == "ceph":  # a copy-on-write clone keeps its snapshot (and so its volume)
        assert copy["parent_snapshot_id"] == snap["id"]
        refused(await c.delete(f"/snapshots/{snap['id']}"), 409, "in_use", volumes=[f"copy-{pool}"])
        await env.ok(await c.post(f"/volumes/{src}/detach"))
        refused(await c.delete(f"/volumes/{src}"), 409, "in_use")
        await env.ok(await c.delete(f"/volumes/copy-{pool}"))
        await env.ok(await c.delete(f"/snapshots/{snap['id']}"))
    else:  # a full copy: independent
        assert copy["parent_snapshot_id"] is None
        await env.ok(await c.delete(f"/snapshots/{snap['id']}"))
        await env.ok(await c.post(f"/volumes/{src}/detach"))
        await env.ok(await c.delete(f"/volumes/copy-{pool}"))
    await env.ok(await c.delete(f"/volumes/{src}"))

    # refused upfront, nothing recorded: smaller than the snapshot, another pool, with a vm
    await env.ok(await c.post("/volumes", json={"name": "s2", "size_gb": 2, "pool": pool,
                                                "vm": "vm"}))  # fmt: skip
    await env.ok(await c.post("/volumes/s2/snapshots", json={"name": f"g2-{pool}"}))
    other = "loc" if pool == "ceph" else "ceph"
    for bad, code in (({"size_gb": 1, "pool": pool}, "invalid_input"),
                      ({"size_gb": 2, "pool": other}, "invalid_input")):  # fmt: skip
        r = await c.post("/volumes", json={"name": "nope", "snapshot": f"g2-{pool}", **bad})
        refused(r, 422, code)
    r = await c.post("/volumes", json={"name": "nope", "size_gb": 2, "pool": pool,
                                       "snapshot": f"g2-{pool}", "vm": "vm"})  # fmt: skip
    refused(r, 422, "invalid_input")
    assert (await c.get("/volumes/nope")).status_code == 404
    await env.ok(await c.delete(f"/snapshots/g2-{pool}"))
    await env.ok(await c.post("/volumes/s2/detach"))
    await env.ok(await c.delete("/volumes/s2"))


async def test_a_failed_clone_leaves_no_volume(env: Env) -> None:
    c = env.c
    await env.ok(await c.post("/volumes", json={"name": "fs", "size_gb": 1, "pool": "ceph",
                                                "vm": "vm"}))  # fmt: skip
    await env.ok(await c.post("/volumes/fs/snapshots", json={"name": "fsn"}))
    quota = (await c.get("/volumes/fs")).json()["project_id"]
    used = (await c.get(f"/projects/{quota}/quota")).json()["volume_gb"]["used"]
    env.runtime.faults.fail_next("volume.snap_clone")
    r = await c.post("/volumes", json={"name": "fc", "size_gb": 1, "pool": "ceph",
                                       "snapshot": "fsn"})  # fmt: skip
    assert r.status_code == 202
    op = await wait_op(c, r.json())
    assert op["status"] == "failed"
    assert (await c.get("/volumes/fc")).status_code == 404
    assert (await c.get(f"/projects/{quota}/quota")).json()["volume_gb"]["used"] == used
    await env.ok(await c.delete("/snapshots/fsn"))  # not held by the failed clone
    await env.ok(await c.post("/volumes/fs/detach"))
    await env.ok(await c.delete("/volumes/fs"))


async def test_deleting_a_ceph_snapshot_measures_the_others_again(env: Env) -> None:
    c = env.c
    await env.ok(await c.post("/volumes", json={"name": "m", "size_gb": 1, "pool": "ceph",
                                                "vm": "vm"}))  # fmt: skip
    await env.ok(await c.post("/volumes/m/snapshots", json={"name": "m1"}))
    env.runtime.faults.fail_next("volume.allocated")  # m2's measure fails: no size yet
    await env.ok(await c.post("/volumes/m/snapshots", json={"name": "m2"}))
    assert (await c.get("/snapshots/m2")).json()["used_bytes"] is None
    await env.ok(await c.delete("/snapshots/m1"))
    m2 = (await c.get("/snapshots/m2")).json()
    assert isinstance(m2["used_bytes"], int) and m2["used_bytes"] > 0
    assert (await c.get("/volumes/m")).json()["snapshots_bytes"] == m2["used_bytes"]
    await env.ok(await c.post("/volumes/m/detach"))
    await env.ok(await c.delete("/volumes/m"))
