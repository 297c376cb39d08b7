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
