"""Root volumes (``VmCreate.root_pool``) through REST with simulator agents: the VM's root disk
is a volume on the pool (``vda``, made from the image, no host-local disk, no host disk claim),
snapshots and captures of it work, it cannot be detached, moved or deleted alone, full clones
get root volumes on the pool, it goes with the VM (delete, recycle bin), and a failed create at
any step leaves no volume on the pool, no row and no quota."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.agent.storage.simulated import SimulatedPool
from corral.agent.storage.simulated_volumes import SimulatedBackend
from corral.api.agent import PoolRef
from corral.server.workflows.engine import FaultPoints
from corral.server.workflows.vm_create import VM_CREATE
from corral.up import Stack
from tests.integration.identity.admin import done, refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.fault_env import WHEN
from tests.support.stack import api_client, pool_reached, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Env:
    stack: Stack
    c: httpx.AsyncClient
    pool_id: str
    runtimes: dict[str, HostRuntime]  # by host id

    @property
    def faults(self) -> FaultPoints:
        return self.stack.server.services.engine.faults

    def on_pool(self) -> dict[str, int]:
        """Every volume on the (local) pool, over all hosts."""
        found: dict[str, int] = {}
        for rt in self.runtimes.values():
            b = rt.backends.for_pool(PoolRef(id=self.pool_id, type="local", settings={}))
            assert isinstance(b, SimulatedBackend)
            found.update(b.volumes(self.pool_id))
        return found

    def host_disks(self) -> set[str]:
        """The VMs with a host-local root disk, over all hosts."""
        found: set[str] = set()
        for rt in self.runtimes.values():
            assert isinstance(rt.volumes, SimulatedPool)
            found |= set(rt.volumes.disks)
        return found

    def spec(self, vm: dict[str, Any]) -> tuple[str | None, list[tuple[str, str]]]:
        stored = self.runtimes[vm["host_id"]].specs.get(vm["id"])
        assert stored is not None
        return stored.disk_path, [(d.volume.volume_id, d.device) for d in stored.spec.disks]

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

    async def usage(self) -> dict[str, int]:
        q = await self.get("/projects/default/quota")
        return {k: q[k]["used"] for k in ("vms", "vcpus", "memory_mb", "volume_gb", "images")}

    async def pool(self) -> dict[str, Any]:
        return (await self.get(f"/storage-pools/{self.pool_id}"))["capacity"]  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("root-volumes-sim")
    async with running_stack(tmp, sim_hosts=2) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        pool_id = done(await c.post("/storage-pools", json=body))["target_id"]
        await pool_reached(c, "loc", 2)
        hosts = (await c.get("/hosts")).json()["items"]
        runtimes = {
            h["id"]: rt
            for h in hosts
            for path, rt in stack.agent.runtimes.items()
            if h["url"].rstrip("/").endswith(path)
        }
        yield Env(stack, c, pool_id, runtimes)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.faults.clear()
    for vm in (await env.get("/vms?limit=1000"))["items"]:
        await env.ok(await env.c.delete(f"/vms/{vm['id']}"))
    for img in (await env.get("/images?limit=1000"))["items"]:
        if img["name"] != "tiny":
            await env.ok(await env.c.delete(f"/images/{img['id']}"))
    for v in (await env.get("/volumes?limit=1000"))["items"]:
        await env.ok(await env.c.delete(f"/volumes/{v['id']}"))


def _create(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 128, "disk_gb": 2,
            "root_pool": "loc", **extra}  # fmt: skip


async def test_a_vm_on_a_root_volume(env: Env) -> None:
    before = await env.usage()
    allocated = (await env.pool())["allocated_gb"]
    body = _create("r1", volumes=[{"size_gb": 1, "pool": "loc"}])
    await env.ok(await env.c.post("/vms", json=body))
    vm = await env.get("/vms/r1")
    root = await env.get(f"/volumes/{vm['root_volume_id']}")
    data = await env.get("/volumes/r1-data1")
    assert (root["name"], root["role"], root["size_gb"], root["status"]) == (
        "r1-root", "root", 2, "in_use"
    )  # fmt: skip
    assert root["attachments"] == [{"vm_id": vm["id"], "device": "vda"}]
    assert root["image_id"] == vm["image_id"] and data["role"] == "data"
    assert env.spec(vm) == (None, [(root["id"], "vda"), (data["id"], "vdb")])
    assert vm["id"] not in env.host_disks()  # no host-local disk
    assert env.on_pool().keys() >= {root["id"], data["id"]}
    host = await env.get(f"/hosts/{vm['host_id']}")
    assert host["capacity"]["disk_gb_used"] == 0  # the pool holds the disk, not the host
    after = await env.usage()
    assert after["volume_gb"] - before["volume_gb"] == 3  # the VM's 2 GiB + 1 GiB, once
    assert (await env.pool())["allocated_gb"] - allocated == 3

    for path, what in (("detach", "detached"), ("move", "moved")):
        body = {"pool": "loc"} if path == "move" else None
        err = refused(await env.c.post(f"/volumes/r1-root/{path}", json=body), 409, "invalid_state")
        assert err["context"]["reason"] == "root_volume", what
    err = refused(await env.c.delete("/volumes/r1-root"), 409, "invalid_state")
    assert err["context"]["reason"] == "root_volume"

    snap = await env.ok(await env.c.post("/volumes/r1-root/snapshots", json={"name": "s1"}))
    assert snap["type"] == "snapshot.create"
    assert [s["name"] for s in (await env.get("/volumes/r1-root/snapshots"))["items"]] == ["s1"]
    await env.ok(await env.c.post("/volumes/r1-root/resize", json={"size_gb": 3}))
    assert (await env.get("/vms/r1"))["disk_gb"] == 3

    await env.ok(await env.c.delete("/vms/r1"))
    assert refused(await env.c.get(f"/volumes/{root['id']}"), 404, "not_found")
    assert root["id"] not in env.on_pool()
    assert (await env.get("/volumes/r1-data1"))["status"] == "available"
    assert (await env.usage())["volume_gb"] - before["volume_gb"] == 1  # the data volume
    assert (await env.pool())["allocated_gb"] - allocated == 1


async def test_capture_and_full_clones_onto_the_pool(env: Env) -> None:
    await env.ok(await env.c.post("/vms", json=_create("src", start=False)))
    img = await env.ok(
        await env.c.post("/images", json={"name": "from-root", "source": {"vm": "src"}})
    )
    assert (await env.get(f"/images/{img['target_id']}"))["status"] == "ready"
    body = {"name": "cl", "mode": "full", "count": 2, "start": False}
    await env.ok(await env.c.post("/vms/src/clone", json=body))
    for name in ("cl-1", "cl-2"):
        vm = await env.get(f"/vms/{name}")
        root = await env.get(f"/volumes/{vm['root_volume_id']}")
        assert (root["name"], root["pool_id"], root["role"]) == (
            f"{name}-root", env.pool_id, "root"
        )  # fmt: skip
        assert vm["id"] not in env.host_disks()
    err = refused(
        await env.c.post("/vms/src/clone", json={"name": "ln", "mode": "linked"}),
        409,
        "invalid_state",
    )
    assert err["context"]["reason"] == "root_volume"


async def test_the_root_volume_goes_to_the_recycle_bin_with_its_vm(env: Env) -> None:
    delayed = {"policy": "delayed", "retention_hours": 24}
    await env.ok(await env.c.post("/vms", json=_create("bin", start=False)))
    root_id = (await env.get("/vms/bin"))["root_volume_id"]
    body = {"vm": delayed, "volume": {"policy": "immediate"}, "image": {"policy": "immediate"}}
    await env.ok(await env.c.put("/deletion-policies", json=body))
    try:
        await env.ok(await env.c.delete("/vms/bin"))
        names = [v["name"] for v in (await env.get("/volumes?limit=1000"))["items"]]
        assert "bin-root" not in names  # hidden with its VM, its name free
        entry = next(e for e in (await env.get("/recycle-bin")) if e["name"] == "bin")
        await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/restore", json={}))
        root = await env.get(f"/volumes/{root_id}")
        assert (root["name"], root["status"]) == ("bin-root", "in_use")
    finally:
        body["vm"] = {"policy": "immediate"}
        await env.ok(await env.c.put("/deletion-policies", json=body))


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VM_CREATE.steps for w in WHEN])
async def test_create_fault_at_any_step_leaves_no_root_volume(
    env: Env, step: str, when: str
) -> None:
    before, allocated = await env.usage(), (await env.pool())["allocated_gb"]
    on_pool = env.on_pool()
    env.faults.inject(VM_CREATE.type, step, when)  # type: ignore[arg-type]
    op = await env.op(await env.c.post("/vms", json=_create("flt")))
    if step in ("record", "claim") or VM_CREATE.is_forward(VM_CREATE.step_index(step)):
        assert op["status"] == "succeeded", op  # done by the request / retried forward
        return
    assert op["status"] == "failed", op
    assert refused(await env.c.get("/vms/flt"), 404, "not_found")
    assert (await env.get("/volumes?limit=1000"))["items"] == []
    assert env.on_pool() == on_pool
    assert await env.usage() == before
    assert (await env.pool())["allocated_gb"] == allocated
