"""Moving a detached volume to another pool through REST with a simulator agent: the copy on the
new pool, the old copy gone, the pools' allocations moved; what is refused (attached, snapshots,
the same pool, a pool in maintenance, no room); failures before the switch leave the volume
where it was, a failed cleanup leaves it usable on its new pool with an error saying what is
left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import PoolRef
from corral.server.workflows.engine import FORWARD_ATTEMPTS
from corral.up import Stack
from tests.integration.identity.admin import refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    def __init__(self, stack: Stack, c: httpx.AsyncClient, runtime: HostRuntime) -> None:
        self.stack, self.c, self.runtime = stack, c, runtime

    async def op(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        return await wait_op(self.c, r.json())

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        op = await self.op(r)
        assert op["status"] == "succeeded", op
        return op

    async def pool(self, name: str) -> dict[str, Any]:
        return (await self.c.get(f"/storage-pools/{name}")).json()  # type: ignore[no-any-return]

    async def on_pool(self, name: str) -> dict[str, int]:
        """The volumes the simulated backend holds on the pool: id -> GiB."""
        pool = await self.pool(name)
        ref = PoolRef(id=pool["id"], type="local", settings={})
        backend = self.runtime.backends.for_pool(ref)
        assert isinstance(backend, SimulatedBackend)
        return dict(backend.volumes(pool["id"]))

    async def allocated(self) -> tuple[float, float]:
        a, b = await self.pool("pa"), await self.pool("pb")
        return a["capacity"]["allocated_gb"], b["capacity"]["allocated_gb"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("move-sim")
    async with running_stack(tmp) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        e = Env(stack, c, next(iter(stack.agent.runtimes.values())))
        for name in ("pa", "pb"):
            body = {"name": name, "type": "local", "settings": {"path": str(tmp / name)},
                    "clusters": [cluster]}  # fmt: skip
            await e.ok(await c.post("/storage-pools", json=body))
        await e.ok(await c.post("/vms", json={"name": "vm", "image": "tiny", "cpus": 1,
                                              "memory_mb": 64}))  # fmt: skip
        yield e


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.stack.server.services.engine.faults.clear()
    env.runtime.faults.clear()
    for v in (await env.c.get("/volumes")).json()["items"]:
        if v["attachments"]:
            await env.op(await env.c.post(f"/volumes/{v['id']}/detach"))
        await env.op(await env.c.delete(f"/volumes/{v['id']}"))


async def _made(env: Env, name: str) -> dict[str, Any]:
    """A 2 GiB volume on pool pa, created there (attached once), detached."""
    body = {"name": name, "size_gb": 2, "pool": "pa", "vm": "vm"}
    await env.ok(await env.c.post("/volumes", json=body))
    await env.ok(await env.c.post(f"/volumes/{name}/detach"))
    return (await env.c.get(f"/volumes/{name}")).json()  # type: ignore[no-any-return]


async def test_a_volume_moves_with_its_id_name_and_size(env: Env) -> None:
    vol = await _made(env, "m")
    before = await env.allocated()
    op = await env.ok(await env.c.post("/volumes/m/move", json={"pool": "pb"}))
    assert op["type"] == "volume.move"
    moved = (await env.c.get("/volumes/m")).json()
    pb = await env.pool("pb")
    assert (moved["id"], moved["size_gb"], moved["pool_id"]) == (vol["id"], 2, pb["id"])
    assert (moved["status"], moved["error"], moved["instantiated"]) == ("available", None, True)
    assert await env.allocated() == (before[0] - 2, before[1] + 2)
    assert vol["id"] not in await env.on_pool("pa")
    assert (await env.on_pool("pb"))[vol["id"]] == 2
    await env.ok(await env.c.post("/volumes/m/attach", json={"vm": "vm"}))  # usable there


async def test_a_volume_never_created_moves_as_a_record(env: Env) -> None:
    await env.ok(await env.c.post("/volumes", json={"name": "r", "size_gb": 1, "pool": "pa"}))
    before = await env.allocated()
    await env.ok(await env.c.post("/volumes/r/move", json={"pool": "pb"}))
    assert (await env.c.get("/volumes/r")).json()["pool_id"] == (await env.pool("pb"))["id"]
    assert await env.allocated() == (before[0] - 1, before[1] + 1)


async def test_moves_that_cannot_work_are_refused_and_change_nothing(env: Env) -> None:
    vol = await _made(env, "x")
    await env.ok(await env.c.post("/volumes/x/attach", json={"vm": "vm"}))
    before = (await env.allocated(), (await env.c.get("/volumes/x")).json())
    refused(await env.c.post("/volumes/x/move", json={"pool": "pb"}), 409, "invalid_state")
    await env.ok(await env.c.post("/volumes/x/detach"))
    refused(await env.c.post("/volumes/x/move", json={"pool": "pa"}), 422, "invalid_input")
    refused(await env.c.post("/volumes/x/move", json={"pool": "nope"}), 404, "not_found")
    await env.ok(await env.c.post("/volumes/x/snapshots", json={"name": "s"}))
    refused(await env.c.post("/volumes/x/move", json={"pool": "pb"}), 409, "invalid_state",
            snapshots=1)  # fmt: skip
    await env.ok(await env.c.delete("/snapshots/s"))
    await env.ok(await env.c.patch("/storage-pools/pb", json={"state": "maintenance"}))
    try:
        refused(await env.c.post("/volumes/x/move", json={"pool": "pb"}), 409, "invalid_state")
    finally:
        await env.ok(await env.c.patch("/storage-pools/pb", json={"state": "enabled"}))
    after = (await env.c.get("/volumes/x")).json()
    assert (after["pool_id"], after["status"]) == (vol["pool_id"], "available")
    assert await env.allocated() == before[0]


@pytest.mark.parametrize("where", ["agent", "copy-before", "copy-after"])
async def test_a_move_failing_before_the_switch_leaves_the_volume_where_it_was(
    env: Env, where: str
) -> None:
    vol = await _made(env, "f")
    before = await env.allocated()
    if where == "agent":
        env.runtime.faults.fail_next("agent.volume.copy")
    else:
        step, when = where.split("-")
        env.stack.server.services.engine.faults.inject("volume.move", step, when)  # type: ignore[arg-type]
    op = await env.op(await env.c.post("/volumes/f/move", json={"pool": "pb"}))
    assert op["status"] == "failed", op
    after = (await env.c.get("/volumes/f")).json()
    assert (after["pool_id"], after["status"], after["error"]) == (
        vol["pool_id"],
        "available",
        None,
    )
    assert await env.allocated() == before
    assert vol["id"] in await env.on_pool("pa") and vol["id"] not in await env.on_pool("pb")
    await env.ok(await env.c.post("/volumes/f/move", json={"pool": "pb"}))  # nothing stuck


async def test_the_switch_is_past_the_point_of_no_return_and_retried(env: Env) -> None:
    vol = await _made(env, "w")
    before = await env.allocated()
    env.stack.server.services.engine.faults.inject("volume.move", "switch", "after")
    await env.ok(await env.c.post("/volumes/w/move", json={"pool": "pb"}))
    assert await env.allocated() == (before[0] - 2, before[1] + 2)  # charged once
    assert (await env.c.get("/volumes/w")).json()["pool_id"] == (await env.pool("pb"))["id"]
    assert vol["id"] in await env.on_pool("pb") and vol["id"] not in await env.on_pool("pa")


async def test_a_failed_cleanup_leaves_the_volume_usable_on_its_new_pool(env: Env) -> None:
    vol = await _made(env, "c")
    env.runtime.faults.fail_next("agent.volume.delete", times=FORWARD_ATTEMPTS)
    op = await env.op(await env.c.post("/volumes/c/move", json={"pool": "pb"}))
    assert op["status"] == "failed", op
    after = (await env.c.get("/volumes/c")).json()
    assert (after["pool_id"], after["status"]) == ((await env.pool("pb"))["id"], "available")
    assert "old copy" in after["error"]
    assert vol["id"] in await env.on_pool("pa")  # the leftover the error names
    await env.ok(await env.c.post("/volumes/c/attach", json={"vm": "vm"}))
