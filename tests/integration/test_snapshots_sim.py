"""Volume snapshots through REST with a simulator agent: the tree (take, branch by reverting,
current node), delete by merging (children keep their parent's place), the chain limit, quota,
and failures that change nothing (or can be retried)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.server.workflows.engine import FORWARD_ATTEMPTS
from corral.up import Stack
from tests.integration.identity.admin import done, refused
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

    async def snap(self, volume: str, name: str) -> dict[str, Any]:
        await self.ok(await self.c.post(f"/volumes/{volume}/snapshots", json={"name": name}))
        return await self.get(name)

    async def get(self, name: str) -> dict[str, Any]:
        r = await self.c.get(f"/snapshots/{name}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def tree(self, volume: str) -> dict[str, tuple[str | None, bool]]:
        """name -> (parent name, current)."""
        items = (await self.c.get(f"/volumes/{volume}/snapshots")).json()["items"]
        by_id = {i["id"]: i["name"] for i in items}
        return {i["name"]: (by_id.get(i["parent_id"]), i["current"]) for i in items}

    async def sizes(self, volume: str) -> dict[str, int | None]:
        """name -> used_bytes of the volume's snapshots."""
        items = (await self.c.get(f"/volumes/{volume}/snapshots")).json()["items"]
        return {i["name"]: i["used_bytes"] for i in items}

    async def total(self, volume: str) -> int | None:
        """The volume's ``snapshots_bytes``, the same in its listing as when got alone."""
        got = (await self.c.get(f"/volumes/{volume}")).json()
        listed = (await self.c.get("/volumes", params={"q": f"name={volume}"})).json()["items"]
        assert [v["snapshots_bytes"] for v in listed] == [got["snapshots_bytes"]]
        total: int | None = got["snapshots_bytes"]
        return total

    def disk_file(self, vm_id: str) -> str:
        stored = self.runtime.specs.get(vm_id)
        assert stored is not None and stored.spec.disks
        return stored.spec.disks[0].volume.name

    async def quota_used(self) -> int:
        vol = (await self.c.get("/volumes")).json()["items"]
        pid = vol[0]["project_id"] if vol else (await self.c.get("/vms/vm0")).json()["project_id"]
        used: int = (await self.c.get(f"/projects/{pid}/quota")).json()["snapshots"]["used"]
        return used


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("snapshots-sim")
    async with running_stack(tmp) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        done(await c.post("/storage-pools", json=body))
        e = Env(stack, c, next(iter(stack.agent.runtimes.values())))
        await e.ok(await c.post("/vms", json={"name": "vm0", "image": "tiny", "cpus": 1,
                                              "memory_mb": 128}))  # fmt: skip
        yield e


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.stack.server.services.engine.faults.clear()
    env.runtime.faults.clear()
    if (await env.c.get("/vms/vm0")).json()["status"] != "running":
        await env.op(await env.c.post("/vms/vm0/start"))
    for v in (await env.c.get("/volumes")).json()["items"]:
        if v["attachments"]:
            await env.op(await env.c.post(f"/volumes/{v['id']}/detach"))
        await env.op(await env.c.delete(f"/volumes/{v['id']}"))


async def _volume(env: Env, name: str) -> dict[str, Any]:
    body = {"name": name, "size_gb": 1, "pool": "loc", "vm": "vm0"}
    await env.ok(await env.c.post("/volumes", json=body))
    return (await env.c.get(f"/volumes/{name}")).json()  # type: ignore[no-any-return]


async def test_tree_revert_branch_and_merge(env: Env) -> None:
    vm_id = (await env.c.get("/vms/vm0")).json()["id"]
    await _volume(env, "d")
    quota0 = await env.quota_used()
    first_file = env.disk_file(vm_id)

    assert (await env.c.get("/volumes/d")).json()["snapshots_bytes"] is None  # none yet
    s1 = await env.snap("d", "s1")
    assert (s1["status"], s1["current"], s1["parent_id"]) == ("ready", True, None)
    assert env.disk_file(vm_id) != first_file  # the VM goes on in a new overlay
    assert isinstance(s1["used_bytes"], int) and s1["used_bytes"] > 0  # the frozen file
    s2 = await env.snap("d", "s2")
    assert isinstance(s2["used_bytes"], int) and s2["used_bytes"] > 0
    assert await env.tree("d") == {"s1": (None, False), "s2": ("s1", True)}
    assert await env.sizes("d") == {"s1": s1["used_bytes"], "s2": s2["used_bytes"]}
    assert await env.total("d") == s1["used_bytes"] + s2["used_bytes"]
    assert await env.quota_used() == quota0 + 2
    assert (await env.c.get("/volumes/d")).json()["status"] == "in_use"

    # reverting needs a stopped VM
    refused(await env.c.post("/snapshots/s1/revert"), 409, "invalid_state")
    await env.ok(await env.c.post("/vms/vm0/stop"))
    await env.ok(await env.c.post("/snapshots/s1/revert"))
    assert await env.tree("d") == {"s1": (None, True), "s2": ("s1", False)}
    await env.snap("d", "s3")  # a new branch from s1
    assert await env.tree("d") == {"s1": (None, False), "s2": ("s1", False), "s3": ("s1", True)}
    await env.ok(await env.c.post("/vms/vm0/start"))
    before = await env.sizes("d")
    assert await env.total("d") == sum(before.values())

    # deleting s1 merges it into both branches; they take its place
    op = await env.ok(await env.c.delete("/snapshots/s1"))
    assert op["type"] == "snapshot.delete"
    assert await env.tree("d") == {"s2": (None, False), "s3": (None, True)}
    # both children's files were rebased: each now holds s1's data too (the simulator's safe
    # rebase copies what the dropped layer held); the active file pulled live has no node
    assert await env.sizes("d") == {"s2": before["s2"] + before["s1"],
                                    "s3": before["s3"] + before["s1"]}  # fmt: skip
    assert await env.total("d") == before["s2"] + before["s3"] + 2 * before["s1"]
    assert await env.quota_used() == quota0 + 2
    # deleting the current node: the volume's content now descends from nothing
    await env.ok(await env.c.delete("/snapshots/s3"))
    assert await env.tree("d") == {"s2": (None, False)}
    refused(await env.c.get("/snapshots/s3"), 404, "not_found")

    # a volume with snapshots can be deleted once detached: its snapshots go with it
    await env.ok(await env.c.post("/volumes/d/detach"))
    await env.ok(await env.c.delete("/volumes/d"))
    refused(await env.c.get("/snapshots/s2"), 404, "not_found")
    assert await env.quota_used() == quota0


async def test_checks_and_chain_limit(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    done(await env.c.post("/volumes", json={"name": "blank", "size_gb": 1, "pool": "loc"}))
    err = refused(
        await env.c.post("/volumes/blank/snapshots", json={"name": "x"}), 409, "invalid_state"
    )
    assert "no data yet" in err["message"]
    await _volume(env, "c")
    await env.snap("c", "one")
    refused(await env.c.post("/volumes/c/snapshots", json={"name": "one"}), 409, "name_taken")
    refused(
        await env.c.post("/volumes/c/snapshots", json={"name": "bad name"}), 422, "invalid_input"
    )

    monkeypatch.setattr("corral.server.services.snapshots.MAX_CHAIN", 2)
    await env.snap("c", "two")
    err = refused(
        await env.c.post("/volumes/c/snapshots", json={"name": "three"}), 409, "invalid_state"
    )
    assert err["context"]["reason"] == "chain_full"
    await env.ok(await env.c.delete("/snapshots/one"))  # merging frees a place
    await env.snap("c", "three")


async def test_failed_create_changes_nothing(env: Env) -> None:
    vm_id = (await env.c.get("/vms/vm0")).json()["id"]
    await _volume(env, "f")
    quota0 = await env.quota_used()
    before = env.disk_file(vm_id)
    env.runtime.faults.fail_next("agent.snapshot.create", times=FORWARD_ATTEMPTS)
    op = await env.op(await env.c.post("/volumes/f/snapshots", json={"name": "nope"}))
    assert op["status"] == "failed", op
    refused(await env.c.get("/snapshots/nope"), 404, "not_found")
    assert env.disk_file(vm_id) == before
    assert (await env.c.get("/volumes/f")).json()["status"] == "in_use"
    assert await env.quota_used() == quota0
    await env.snap("f", "yes")  # and it works afterwards
    # a passing failure (one attempt) is retried: the snapshot is taken
    env.runtime.faults.fail_next("vm.snapshot_disk")
    s = await env.snap("f", "retried")
    assert s["status"] == "ready" and env.disk_file(vm_id) not in (before,)


async def test_failed_merge_can_be_retried(env: Env) -> None:
    await _volume(env, "m")
    await env.snap("m", "a")
    await env.snap("m", "b")
    env.runtime.faults.fail_next("agent.snapshot.rebase", times=3)
    op = await env.op(await env.c.delete("/snapshots/a"))
    assert op["status"] == "failed", op
    a = await env.get("a")
    assert a["status"] == "error" and "continues the merge" in a["error"]
    assert (await env.c.get("/volumes/m")).json()["status"] == "in_use"
    await env.ok(await env.c.delete("/snapshots/a"))
    assert await env.tree("m") == {"b": (None, True)}


async def _due_round(env: Env, volume_id: str) -> int:
    """Make the volume's automatic snapshot due and run one scheduler tick; wait for its ops."""
    from sqlalchemy import update

    from corral.server.db.tables import VolumeRow
    from corral.server.db.types import utcnow
    from corral.server.services import snapshot_schedule

    svc = env.stack.server.services
    async with svc.sessionmaker.begin() as s:
        await s.execute(
            update(VolumeRow)
            .where(VolumeRow.id == volume_id)
            .values(next_auto_snapshot_at=utcnow())
        )
    started = await snapshot_schedule.run_due(svc)
    ops = (await env.c.get("/operations", params={"q": "status=in:queued|running"})).json()
    for op in ops["items"]:
        await wait_op(env.c, op)
    return started


async def test_schedule_takes_and_prunes_automatic_snapshots_only(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = await _volume(env, "sched")
    sched = {"every_minutes": 60, "keep": 2}
    done(await env.c.patch("/volumes/sched", json={"snapshot_schedule": sched}))
    assert (await env.c.get("/volumes/sched")).json()["snapshot_schedule"] == sched
    await env.snap("sched", "manual")
    for _ in range(3):
        assert await _due_round(env, v["id"]) == 1
    items = (await env.c.get("/volumes/sched/snapshots")).json()["items"]
    autos = sorted(i["name"] for i in items if i["kind"] == "auto")
    assert len(autos) == 3 and {i["name"] for i in items if i["kind"] == "manual"} == {"manual"}
    assert await _due_round(env, v["id"]) == 1  # over keep: the oldest automatic one goes
    items = (await env.c.get("/volumes/sched/snapshots")).json()["items"]
    assert sorted(i["name"] for i in items if i["kind"] == "auto") == autos[1:]
    assert "manual" in {i["name"] for i in items}

    # a chain full of manual snapshots: the round is skipped, nothing manual is touched
    monkeypatch.setattr("corral.server.services.snapshots.MAX_CHAIN", 1)
    monkeypatch.setattr("corral.server.services.snapshot_schedule.MAX_CHAIN", 1)
    for name in autos[1:]:
        await env.ok(await env.c.delete(f"/snapshots/{name}"))
    assert await _due_round(env, v["id"]) == 0
    vol = (await env.c.get("/volumes/sched")).json()
    assert "chain is full" in vol["error"]
    assert [i["name"] for i in (await env.c.get("/volumes/sched/snapshots")).json()["items"]] == [
        "manual"
    ]

    done(await env.c.patch("/volumes/sched", json={"snapshot_schedule": None}))
    assert (await env.c.get("/volumes/sched")).json()["snapshot_schedule"] is None


async def test_nfs_volumes_snapshot_offline_only(env: Env) -> None:
    cluster = (await env.c.get("/clusters")).json()["items"][0]["name"]
    body = {"name": "nas", "type": "nfs", "settings": {"server": "nas.lan", "export": "/vms"},
            "clusters": [cluster]}  # fmt: skip
    done(await env.c.post("/storage-pools", json=body))
    try:
        await env.ok(await env.c.post("/volumes", json={"name": "nv", "size_gb": 1,
                                                        "pool": "nas", "vm": "vm0"}))  # fmt: skip
        err = refused(
            await env.c.post("/volumes/nv/snapshots", json={"name": "n1"}), 409, "invalid_state"
        )
        assert err["context"]["pool_type"] == "nfs"
        await env.ok(await env.c.post("/vms/vm0/stop"))
        await env.snap("nv", "n1")
        await env.snap("nv", "n2")
        await env.ok(await env.c.post("/vms/vm0/start"))
        refused(await env.c.delete("/snapshots/n1"), 409, "invalid_state")
        await env.ok(await env.c.post("/vms/vm0/stop"))
        await env.ok(await env.c.delete("/snapshots/n1"))
        await env.ok(await env.c.post("/vms/vm0/start"))
        await env.ok(await env.c.post("/volumes/nv/detach"))
        await env.ok(await env.c.delete("/volumes/nv"))
    finally:
        await env.c.delete("/storage-pools/nas")


async def test_revert_with_unknown_outcome_leaves_the_volume_in_error(env: Env) -> None:
    from corral.api.errors import AgentUnreachable

    await _volume(env, "u")
    await env.snap("u", "u1")
    await env.ok(await env.c.post("/vms/vm0/stop"))
    env.runtime.faults.fail_next(
        "agent.snapshot.revert", AgentUnreachable("lost the host"), times=FORWARD_ATTEMPTS
    )
    op = await env.op(await env.c.post("/snapshots/u1/revert"))
    assert op["status"] == "failed", op
    vol = (await env.c.get("/volumes/u")).json()
    assert vol["status"] == "error" and "outcome unknown" in vol["error"]
    assert (await env.get("u1"))["status"] == "ready"
    # an operator who checked the host clears it (no API for that yet): back to in_use
    from sqlalchemy import update

    from corral.server.db.tables import VolumeRow

    async with env.stack.server.services.sessionmaker.begin() as s:
        await s.execute(
            update(VolumeRow).where(VolumeRow.id == vol["id"]).values(status="in_use", error=None)
        )


async def test_an_unmeasured_snapshot_has_no_size(env: Env) -> None:
    """A measurement that fails does not fail the snapshot: its size is unknown (None) and the
    volume's total counts the measured ones only."""
    await _volume(env, "um")
    measured = await env.snap("um", "m1")
    env.runtime.faults.fail_next("volume.allocated")
    blind = await env.snap("um", "m2")
    assert blind["status"] == "ready" and blind["used_bytes"] is None
    assert await env.sizes("um") == {"m1": measured["used_bytes"], "m2": None}
    assert await env.total("um") == measured["used_bytes"]


async def test_ceph_and_whole_vm_snapshots_have_sizes(env: Env) -> None:
    """rbd (the simulator's Ceph snapshot: ``snap_allocated``) and every node of a whole-VM
    snapshot (``frozen_bytes`` per volume) get their size."""
    from corral.agent.storage.simulated_volumes import sim_own_bytes

    cluster = (await env.c.get("/clusters")).json()["items"][0]["name"]
    body = {"name": "ceph", "type": "rbd", "credentials": "AQBzZWNyZXQta2V5LWZvci10ZXN0cw==",
            "settings": {"monitors": ["127.0.0.1:6789"], "pool": "rbd", "user": "admin"},
            "clusters": [cluster]}  # fmt: skip
    await env.ok(await env.c.post("/storage-pools", json=body))
    try:
        await env.ok(await env.c.post("/volumes", json={"name": "cv", "size_gb": 1,
                                                        "pool": "ceph", "vm": "vm0"}))  # fmt: skip
        vol = (await env.c.get("/volumes/cv")).json()
        c1 = await env.snap("cv", "c1")
        assert c1["used_bytes"] == sim_own_bytes(vol["pool_id"], f"{vol['id']}@snap-{c1['id']}")
        assert await env.total("cv") == c1["used_bytes"]
        await env.ok(await env.c.post("/volumes/cv/detach"))
        await env.ok(await env.c.delete("/volumes/cv"))
    finally:
        await env.c.delete("/storage-pools/ceph")

    body = {"name": "whole", "image": "tiny", "cpus": 1, "memory_mb": 128, "root_pool": "loc",
            "volumes": [{"size_gb": 1, "pool": "loc"}], "start": False}  # fmt: skip
    await env.ok(await env.c.post("/vms", json=body))
    try:
        await env.ok(await env.c.post("/vms/whole/snapshots", json={"name": "w1"}))
        (vs,) = (await env.c.get("/vms/whole/snapshots")).json()["items"]
        nodes = [await env.get(sid) for sid in vs["snapshots"]]
        assert len(nodes) == 2
        for node in nodes:
            assert isinstance(node["used_bytes"], int) and node["used_bytes"] > 0
            volume = (await env.c.get(f"/volumes/{node['volume_id']}")).json()
            assert volume["snapshots_bytes"] == node["used_bytes"]
    finally:
        await env.ok(await env.c.delete("/vms/whole"))
