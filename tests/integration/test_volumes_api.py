"""Data volumes through REST, the parts that need no host: records, quota and pool accounting,
validation with stable codes, permissions, query, tags, ETags, the pool delete rule (and one VM, on
the simulated host, to which a volume of another project cannot be attached). SQLite and
PostgreSQL; simulator stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.up import Stack
from tests.integration.identity.admin import done, names, refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support import postgres
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    tmp = tmp_path_factory.mktemp("volumes-api")
    url = None
    if request.param == "postgres":
        url = await postgres.create_database(request.getfixturevalue("pg_server"), "t_volumes_api")
    async with running_stack(tmp, database_url=url) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))  # public
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        done(await c.post("/storage-pools", json=body))
        yield stack, c


async def _pool(c: httpx.AsyncClient) -> dict[str, Any]:
    return (await c.get("/storage-pools/loc")).json()  # type: ignore[no-any-return]


async def _cleanup(c: httpx.AsyncClient) -> None:
    for v in (await c.get("/volumes", params={"limit": 1000})).json()["items"]:
        done(await c.delete(f"/volumes/{v['id']}"))


async def test_record_resize_rename_delete_accounting(env: tuple[Stack, httpx.AsyncClient]) -> None:
    _stack, c = env
    before = (await _pool(c))["capacity"]["allocated_gb"]
    op = done(await c.post("/volumes", json={"name": "data1", "size_gb": 10, "pool": "loc"}))
    assert op["type"] == "volume.create" and op["target_type"] == "volume"
    v = (await c.get("/volumes/data1")).json()
    assert v["id"] == op["target_id"]
    assert (v["status"], v["size_gb"], v["format"], v["instantiated"]) == (
        "available",
        10,
        "qcow2",
        False,
    )
    assert v["attachments"] == [] and v["host_id"] is None and v["qos"]["total_iops_sec"] == 0
    assert (await _pool(c))["capacity"]["allocated_gb"] == before + 10
    project = v["project_id"]
    quota = (await c.get(f"/projects/{project}/quota")).json()
    assert quota["volume_gb"]["used"] >= 10

    # never attached: resize and delete are record changes, finished at once
    done(await c.post("/volumes/data1/resize", json={"size_gb": 15}))
    assert (await c.get("/volumes/data1")).json()["size_gb"] == 15
    assert (await _pool(c))["capacity"]["allocated_gb"] == before + 15
    refused(await c.post("/volumes/data1/resize", json={"size_gb": 15}), 422, "invalid_input")
    refused(await c.post("/volumes/data1/resize", json={"size_gb": 5}), 422, "invalid_input")

    qos = {"total_iops_sec": 500, "read_bytes_sec": 10_000_000}
    done(await c.patch("/volumes/data1", json={"name": "data2", "qos": qos}))
    v = (await c.get("/volumes/data2")).json()
    assert v["qos"]["total_iops_sec"] == 500 and v["qos"]["read_bytes_sec"] == 10_000_000
    refused(await c.get("/volumes/data1"), 404, "not_found")

    # the pool holds a volume: it cannot be deleted
    done(await c.patch("/storage-pools/loc", json={"state": "maintenance"}))
    refused(await c.delete("/storage-pools/loc"), 409, "in_use")
    refused(
        await c.post("/volumes", json={"name": "x", "size_gb": 1, "pool": "loc"}),
        409,
        "invalid_state",
    )
    done(await c.patch("/storage-pools/loc", json={"state": "enabled"}))

    done(await c.delete("/volumes/data2"))
    refused(await c.get("/volumes/data2"), 404, "not_found")
    assert (await _pool(c))["capacity"]["allocated_gb"] == before
    after = (await c.get(f"/projects/{project}/quota")).json()
    assert after["volume_gb"]["used"] == quota["volume_gb"]["used"] - 10


async def test_bad_input_changes_nothing(env: tuple[Stack, httpx.AsyncClient]) -> None:
    _stack, c = env
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "v", "size_gb": 0, "pool": "loc"}, 422, "invalid_input"),
        ({"name": "v", "size_gb": 10**6, "pool": "loc"}, 422, "invalid_input"),
        ({"name": "bad name", "size_gb": 1, "pool": "loc"}, 422, "invalid_input"),
        ({"name": "v", "size_gb": 1, "pool": "nope"}, 404, "not_found"),
        ({"name": "v", "size_gb": 1, "pool": "loc", "vm": "nope"}, 404, "not_found"),
        (
            {
                "name": "v",
                "size_gb": 1,
                "pool": "loc",
                "qos": {"total_iops_sec": 1, "read_iops_sec": 2},
            },
            422,
            "invalid_input",
        ),
        ({"name": "v", "size_gb": 1, "pool": "loc", "color": "red"}, 422, "invalid_input"),
    ]
    before = (await _pool(c))["capacity"]["allocated_gb"]
    for body, status, code in bad:
        refused(await c.post("/volumes", json=body), status, code)
    assert (await c.get("/volumes")).json()["total"] == 0
    assert (await _pool(c))["capacity"]["allocated_gb"] == before

    done(await c.post("/volumes", json={"name": "v", "size_gb": 1, "pool": "loc"}))
    refused(
        await c.post("/volumes", json={"name": "v", "size_gb": 1, "pool": "loc"}), 409, "name_taken"
    )
    refused(await c.post("/volumes/v/detach"), 409, "invalid_state")
    refused(await c.post("/volumes/v/attach", json={"vm": "nope"}), 404, "not_found")
    assert (await c.get("/volumes/v")).json()["status"] == "available"
    await _cleanup(c)


async def test_quota_limits_volume_gb(env: tuple[Stack, httpx.AsyncClient]) -> None:
    stack, c = env
    pid = await make_project(stack, "vq")
    await make_user(stack, "vq-admin", {pid: "project-admin"})
    done(await c.put(f"/projects/{pid}/quota", json={"volume_gb": 20}))
    async with client_as(stack, "vq-admin") as u:
        done(await u.post("/volumes", json={"name": "a", "size_gb": 15, "pool": "loc"}))
        refused(
            await u.post("/volumes", json={"name": "b", "size_gb": 6, "pool": "loc"}),
            409,
            "quota_exceeded",
        )
        refused(await u.post("/volumes/a/resize", json={"size_gb": 21}), 409, "quota_exceeded")
        assert (await u.get("/volumes/a")).json()["size_gb"] == 15
        done(await u.post("/volumes", json={"name": "b", "size_gb": 5, "pool": "loc"}))
        done(await u.delete("/volumes/a"))
        done(await u.delete("/volumes/b"))
    assert (await c.get(f"/projects/{pid}/quota")).json()["volume_gb"]["used"] == 0


async def test_pool_capacity_is_enforced_with_overcommit(
    env: tuple[Stack, httpx.AsyncClient],
) -> None:
    stack, c = env
    from sqlalchemy import update

    from corral.server.db.tables import StoragePoolRow

    async with stack.server.services.sessionmaker.begin() as s:
        await s.execute(update(StoragePoolRow).values(total_gb=10.0))
    try:
        done(await c.patch("/storage-pools/loc", json={"overcommit": 2}))
        done(await c.post("/volumes", json={"name": "big", "size_gb": 18, "pool": "loc"}))
        err = refused(
            await c.post("/volumes", json={"name": "more", "size_gb": 3, "pool": "loc"}),
            409,
            "pool_full",
        )
        assert err["context"]["allocatable_gb"] == 20
        refused(await c.post("/volumes/big/resize", json={"size_gb": 21}), 409, "pool_full")
    finally:
        async with stack.server.services.sessionmaker.begin() as s:
            await s.execute(update(StoragePoolRow).values(total_gb=0.0))
        done(await c.patch("/storage-pools/loc", json={"overcommit": 1}))
        await _cleanup(c)


async def test_query_tags_etag_and_permissions(env: tuple[Stack, httpx.AsyncClient]) -> None:
    stack, _c = env
    pid = await make_project(stack, "vp")
    await make_user(stack, "vp-member", {pid: "member"})
    await make_user(stack, "vp-viewer", {pid: "viewer"})
    async with client_as(stack, "vp-member") as m, client_as(stack, "vp-viewer") as viewer:
        for name, size in (("small", 1), ("mid", 5), ("large", 50)):
            done(await m.post("/volumes", json={"name": name, "size_gb": size, "pool": "loc"}))
        page = (await m.get("/volumes", params={"q": "size_gb>=5", "sort": "-size_gb"})).json()
        assert names(page) == ["large", "mid"]
        assert names((await m.get("/volumes", params={"q": "pool.name=loc,size<2"})).json()) == [
            "small"
        ]
        refused(await m.get("/volumes", params={"q": "qos=1"}), 400, "invalid_query")
        done(await m.post("/volumes/mid/tags", json={"tags": ["tier=gold"]}))
        assert names((await m.get("/volumes", params={"tag": "tier=gold"})).json()) == ["mid"]

        etag = (await m.get("/volumes/mid")).headers["ETag"]
        done(await m.patch("/volumes/mid", json={"name": "mid2"}, headers={"If-Match": etag}))
        r = await m.patch("/volumes/mid2", json={"name": "mid3"}, headers={"If-Match": etag})
        refused(r, 412, "precondition_failed")

        # viewers see nothing that is not shared, and may not create
        assert (await viewer.get("/volumes")).json()["total"] == 0
        refused(
            await viewer.post("/volumes", json={"name": "v", "size_gb": 1, "pool": "loc"}),
            403,
            "forbidden",
        )
        refused(await viewer.delete("/volumes/small"), 403, "forbidden")
        for name in ("small", "mid2", "large"):
            done(await m.delete(f"/volumes/{name}"))


async def _quotas(c: httpx.AsyncClient) -> dict[str, Any]:
    projects = (await c.get("/projects", params={"limit": 1000})).json()["items"]
    return {p["id"]: (await c.get(f"/projects/{p['id']}/quota")).json() for p in projects}


async def _volume_ops(c: httpx.AsyncClient) -> int:
    page = (await c.get("/operations", params={"q": "target_type=volume", "limit": 1})).json()
    return int(page["total"])


async def test_attach_across_projects_is_refused_and_changes_nothing(
    env: tuple[Stack, httpx.AsyncClient],
) -> None:
    """A member of two projects sees a volume of one and a VM of the other: attaching (or
    creating a volume on that VM) is ``422 invalid_input``, and nothing is recorded."""
    stack, c = env
    pa, pb = await make_project(stack, "xa"), await make_project(stack, "xb")
    await make_user(stack, "x-both", {pa: "member", pb: "member"})
    async with client_as(stack, "x-both") as u:
        in_a, in_b = {"X-Corral-Project": pa}, {"X-Corral-Project": pb}
        body = {"name": "xb-vm", "image": "tiny", "cpus": 1, "memory_mb": 128}
        r = await u.post("/vms", json=body, headers=in_b)
        assert r.status_code == 202, r.text
        assert (await wait_op(u, r.json()))["status"] == "succeeded"
        done(await u.post("/volumes", json={"name": "xa-vol", "size_gb": 1, "pool": "loc"},
                          headers=in_a))  # fmt: skip
        vol = (await u.get("/volumes/xa-vol")).json()
        vm = (await u.get("/vms/xb-vm")).json()
        assert (vol["project_id"], vm["project_id"], vm["status"]) == (pa, pb, "running")
        pool = (await _pool(c))["capacity"]["allocated_gb"]
        quotas = await _quotas(c)
        ops = await _volume_ops(c)

        for caller in (u, c):  # the member of both, and a platform admin
            err = refused(
                await caller.post("/volumes/xa-vol/attach", json={"vm": "xb-vm"}),
                422,
                "invalid_input",
                vm="xb-vm",
            )
            assert err["message"] == "the volume and the VM are in different projects"
        # creating a volume on that VM: scoped to project A the VM is not there; the admin's
        # new volume goes to its own project, not B
        body = {"name": "xa-vol2", "size_gb": 1, "pool": "loc", "vm": "xb-vm"}
        refused(await u.post("/volumes", json=body, headers=in_a), 404, "not_found")
        refused(await c.post("/volumes", json=body), 422, "invalid_input", vm="xb-vm")

        assert (await u.get("/volumes/xa-vol")).json() == vol  # available, no attachment
        assert (await u.get("/vms/xb-vm")).json() == vm
        assert (await u.get("/vms/xb-vm/volumes")).json()["total"] == 0
        refused(await c.get("/volumes/xa-vol2"), 404, "not_found")  # in no project
        assert (await _pool(c))["capacity"]["allocated_gb"] == pool
        assert await _quotas(c) == quotas  # every project's, the admin's one included
        assert await _volume_ops(c) == ops  # no operation was queued or recorded

        r = await u.delete("/vms/xb-vm")
        assert (await wait_op(u, r.json()))["status"] == "succeeded", r.text
        done(await u.delete("/volumes/xa-vol"))
