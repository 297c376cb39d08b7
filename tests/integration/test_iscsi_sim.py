"""Volumes on an iscsi pool through REST with simulator agents: the hosts report the target's
LUNs (the simulated target has LUNs 1 and 2 of 10 GiB, 3 of 20 GiB, 4 of 50 GiB), a volume
gets the smallest free LUN that holds it, no LUN is given twice, a LUN cannot grow, and a
deleted volume's LUN is free again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.integration.identity.admin import refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")

POOL = {"name": "san", "type": "iscsi",
        "settings": {"portal": "127.0.0.1:3260", "iqn": "iqn.2026-12.test.corral:san"}}  # fmt: skip


async def ok(c: httpx.AsyncClient, r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 202, r.text
    op = await wait_op(c, r.json())
    assert op["status"] == "succeeded", op
    return op


async def luns(c: httpx.AsyncClient) -> dict[int, tuple[float, str | None]]:
    r = await c.get("/storage-pools/san/luns")
    assert r.status_code == 200, r.text
    return {x["lun"]: (x["size_gb"], x["volume_id"]) for x in r.json()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def c(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    tmp = tmp_path_factory.mktemp("iscsi-sim")
    async with running_stack(tmp, sim_hosts=2) as stack, api_client(stack) as client:
        await upload_image(client, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await client.get("/clusters")).json()["items"][0]["name"]
        await ok(client, await client.post("/storage-pools", json={**POOL, "clusters": [cluster]}))
        for _ in range(100):  # the hosts report the target's LUNs
            if await luns(client):
                break
            await asyncio.sleep(0.05)
        body = {"name": "vm", "image": "tiny", "cpus": 1, "memory_mb": 64}
        await ok(client, await client.post("/vms", json=body))
        yield client


async def test_the_lun_inventory_is_reported(c: httpx.AsyncClient) -> None:
    assert await luns(c) == {1: (10, None), 2: (10, None), 3: (20, None), 4: (50, None)}
    refused(await c.get("/storage-pools/nope/luns"), 404, "not_found")


async def test_volumes_get_the_smallest_free_lun_that_holds_them(c: httpx.AsyncClient) -> None:
    body = {"name": "big", "size_gb": 15, "pool": "san", "vm": "vm"}
    await ok(c, await c.post("/volumes", json=body))
    big = (await c.get("/volumes/big")).json()
    assert (big["format"], big["status"]) == ("raw", "in_use")
    assert (await luns(c))[3] == (20, big["id"])
    for name in ("a", "b"):
        await ok(c, await c.post("/volumes", json={"name": name, "size_gb": 5, "pool": "san"}))
    taken = {lun: vid for lun, (_, vid) in (await luns(c)).items() if vid}
    assert sorted(taken) == [1, 2, 3]
    # nothing of 60 GiB, and LUN 4 (50 GiB) is the last free one
    r = await c.post("/volumes", json={"name": "huge", "size_gb": 60, "pool": "san"})
    refused(r, 409, "invalid_state", reason="no_free_lun", free_gb=[50.0])
    assert "huge" not in {v["name"] for v in (await c.get("/volumes")).json()["items"]}

    # a LUN does not grow past its size; within it, it does
    a = (await c.get("/volumes/a")).json()
    refused(await c.post(f"/volumes/{a['id']}/resize", json={"size_gb": 11}), 422, "invalid_input",
            reason="lun_size")  # fmt: skip
    await ok(c, await c.post(f"/volumes/{a['id']}/resize", json={"size_gb": 10}))

    # deleted: the LUN is free again and the next volume may take it
    await ok(c, await c.delete(f"/volumes/{a['id']}"))
    assert (await luns(c))[1 if taken[1] == a["id"] else 2][1] is None
    await ok(c, await c.post("/volumes/big/detach"))
    for v in ("b", "big"):
        await ok(c, await c.delete(f"/volumes/{v}"))
    assert all(vid is None for _, vid in (await luns(c)).values())


async def test_a_vm_with_volumes_on_the_pool_gets_distinct_luns(c: httpx.AsyncClient) -> None:
    body = {"name": "db", "image": "tiny", "cpus": 1, "memory_mb": 64,
            "volumes": [{"size_gb": 8, "pool": "san"}, {"size_gb": 8, "pool": "san"}]}  # fmt: skip
    await ok(c, await c.post("/vms", json=body))
    used = {lun for lun, (_, vid) in (await luns(c)).items() if vid}
    assert used == {1, 2}
    await ok(c, await c.delete("/vms/db"))
    for v in (await c.get("/volumes")).json()["items"]:
        await ok(c, await c.delete(f"/volumes/{v['id']}"))
