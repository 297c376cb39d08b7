"""Whole-VM snapshots through REST with simulator agents: every volume of a VM (root volume and
data volumes) snapshotted at one moment, with or without memory; the nodes in each volume's
tree; revert (disks, then the VM resumed from its memory); delete by merging; the refusals
(host-local root disk, memory of a stopped VM, revert of a running VM, deleting one node
alone); and all or nothing: a failure at any step of the snapshot leaves no record, no quota
and the volumes on their old files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.server.workflows.engine import FORWARD_ATTEMPTS, FaultPoints
from corral.server.workflows.vm_snapshot_create import VM_SNAPSHOT_CREATE
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
    runtimes: dict[str, HostRuntime]  # by host id

    @property
    def faults(self) -> FaultPoints:
        return self.stack.server.services.engine.faults

    async def op(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        return await wait_op(self.c, r.json())

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        op = await self.op(r)
        assert op["status"] == "succeeded", op
        return op

    async def get(self, path: str) -> Any:
        r = await self.c.get(path)
        assert r.status_code == 200, r.text
        return r.json()

    async def snapshots_used(self) -> int:
        used: int = (await self.get("/projects/default/quota"))["snapshots"]["used"]
        return used

    async def files(self, vm: str) -> dict[str, tuple[str, str | None]]:
        """Each volume of the VM: (its active file, that file's backing), by volume id, as the
        VM's host stores it in the VM's spec."""
        v = await self.get(f"/vms/{vm}")
        stored = self.runtimes[v["host_id"]].specs.get(v["id"])
        assert stored is not None
        return {d.volume.volume_id: (d.volume.name, None) for d in stored.spec.disks}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("vm-snapshots-sim")
    async with running_stack(tmp, sim_hosts=1) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        done(await c.post("/storage-pools", json=body))
        await pool_reached(c, "loc", 1)
        hosts = (await c.get("/hosts")).json()["items"]
        runtimes = {
            h["id"]: rt
            for h in hosts
            for path, rt in stack.agent.runtimes.items()
            if h["url"].rstrip("/").endswith(path)
        }
        yield Env(stack, c, runtimes)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.faults.clear()
    for rt in env.runtimes.values():
        rt.faults.clear()
    for vm in (await env.get("/vms?limit=1000"))["items"]:
        await env.ok(await env.c.delete(f"/vms/{vm['id']}"))
    for v in (await env.get("/volumes?limit=1000"))["items"]:
        await env.ok(await env.c.delete(f"/volumes/{v['id']}"))


async def _vm(env: Env, name: str, *, start: bool = True) -> dict[str, Any]:
    body = {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 128, "root_pool": "loc",
            "volumes": [{"size_gb": 1, "pool": "loc"}], "start": start}  # fmt: skip
    await env.ok(await env.c.post("/vms", json=body))
    return await env.get(f"/vms/{name}")  # type: ignore[no-any-return]


async def test_snapshot_revert_delete_with_memory(env: Env) -> None:
    vm = await _vm(env, "m1")
    used = await env.snapshots_used()
    before = await env.files("m1")
    op = await env.ok(await env.c.post("/vms/m1/snapshots", json={"name": "s1", "memory": True}))
    assert op["type"] == "vm.snapshot"
    listed = (await env.get("/vms/m1/snapshots"))["items"]
    assert [(s["name"], s["status"], s["memory"]) for s in listed] == [("s1", "ready", True)]
    vs = listed[0]
    assert await env.get("/vms/m1/snapshots/s1") == vs
    assert len(vs["snapshots"]) == 2 and await env.snapshots_used() == used + 2
    after = await env.files("m1")
    nodes = [await env.get(f"/snapshots/{sid}") for sid in vs["snapshots"]]
    for node in nodes:
        assert node["vm_snapshot_id"] == vs["id"] and node["current"] is True
        vid = node["volume_id"]
        assert after[vid][0] != before[vid][0]  # the disk went on in a new overlay
    root = nodes[0]["volume_id"]
    assert root == vm["root_volume_id"]  # the root volume first

    err = refused(await env.c.delete(f"/snapshots/{nodes[1]['id']}"), 409, "invalid_state")
    assert err["context"]["reason"] == "vm_snapshot"
    refused(await env.c.post("/vms/m1/snapshots/s1/revert"), 409, "invalid_state")  # it runs

    await env.ok(await env.c.post("/vms/m1/stop", json={"force": True}))
    op = await env.ok(await env.c.post("/vms/m1/snapshots/s1/revert"))
    assert op["type"] == "vm.snapshot.revert"
    v = await env.get("/vms/m1")
    assert (v["status"], v["power_state"]) == ("running", "running")  # resumed from memory
    reverted = await env.files("m1")
    assert all(reverted[vid][0] not in (before[vid][0], after[vid][0]) for vid in reverted)

    await env.ok(await env.c.delete("/vms/m1/snapshots/s1"))
    assert (await env.get("/vms/m1/snapshots"))["items"] == []
    assert await env.snapshots_used() == used
    for node in nodes:
        refused(await env.c.get(f"/snapshots/{node['id']}"), 404, "not_found")


async def test_disk_only_snapshot_of_a_stopped_vm(env: Env) -> None:
    await _vm(env, "st", start=False)
    bad = {"name": "m", "memory": True}
    refused(await env.c.post("/vms/st/snapshots", json=bad), 422, "invalid_input")
    await env.ok(await env.c.post("/vms/st/snapshots", json={"name": "a"}))
    await env.ok(await env.c.post("/vms/st/snapshots", json={"name": "b"}))
    refused(await env.c.post("/vms/st/snapshots", json={"name": "b"}), 409, "name_taken")
    await env.ok(await env.c.post("/vms/st/snapshots/a/revert"))
    v = await env.get("/vms/st")
    assert (v["status"], v["power_state"]) == ("stopped", "stopped")
    # a snapshot whose data the present content no longer descends from is still deletable
    await env.ok(await env.c.delete("/vms/st/snapshots/b"))
    names = [s["name"] for s in (await env.get("/vms/st/snapshots"))["items"]]
    assert names == ["a"]
    # the VM goes with its snapshots
    await env.ok(await env.c.delete("/vms/st"))


async def test_a_host_local_root_disk_has_no_whole_vm_snapshots(env: Env) -> None:
    body = {"name": "hl", "image": "tiny", "cpus": 1, "memory_mb": 128, "start": False}
    await env.ok(await env.c.post("/vms", json=body))
    err = refused(await env.c.post("/vms/hl/snapshots", json={"name": "x"}), 409, "invalid_state")
    assert err["context"]["reason"] == "host_local_root"


@pytest.mark.parametrize(
    ("step", "when"), [(s.name, w) for s in VM_SNAPSHOT_CREATE.steps for w in WHEN]
)
async def test_snapshot_fault_at_any_step(env: Env, step: str, when: str) -> None:
    await _vm(env, "f1")
    used, before = await env.snapshots_used(), await env.files("f1")
    env.faults.inject(VM_SNAPSHOT_CREATE.type, step, when)  # type: ignore[arg-type]
    op = await env.op(await env.c.post("/vms/f1/snapshots", json={"name": "s"}))
    if VM_SNAPSHOT_CREATE.is_forward(VM_SNAPSHOT_CREATE.step_index(step)):
        assert op["status"] == "succeeded", op  # retried forward
        return
    assert op["status"] == "failed", op
    assert (await env.get("/vms/f1/snapshots"))["items"] == []
    assert await env.snapshots_used() == used
    assert await env.files("f1") == before
    vols = (await env.get("/vms/f1/volumes"))["items"]
    assert {v["status"] for v in vols} == {"in_use"}


async def test_an_agent_failure_leaves_nothing(env: Env) -> None:
    vm = await _vm(env, "f2")
    used, before = await env.snapshots_used(), await env.files("f2")
    # the snapshot task is retried (point of no return): it fails every time
    env.runtimes[vm["host_id"]].faults.fail_next("agent.vm.snapshot", times=FORWARD_ATTEMPTS)
    op = await env.op(await env.c.post("/vms/f2/snapshots", json={"name": "s"}))
    assert op["status"] == "failed", op
    assert (await env.get("/vms/f2/snapshots"))["items"] == []
    assert await env.snapshots_used() == used
    assert await env.files("f2") == before


async def test_a_revert_failing_half_way_is_finished_by_reverting_again(env: Env) -> None:
    vm = await _vm(env, "hr")
    await env.ok(await env.c.post("/vms/hr/snapshots", json={"name": "s", "memory": True}))
    await env.ok(await env.c.post("/vms/hr/stop", json={"force": True}))
    before = await env.files("hr")
    env.runtimes[vm["host_id"]].faults.fail_next("agent.vm.memory")  # after the disks
    op = await env.op(await env.c.post("/vms/hr/snapshots/s/revert"))
    assert op["status"] == "failed", op
    vs = await env.get("/vms/hr/snapshots/s")
    assert vs["status"] == "error" and "revert again" in vs["error"]
    reverted = await env.files("hr")
    assert all(reverted[v][0] != before[v][0] for v in reverted)  # the disks are reverted
    assert (await env.get("/vms/hr"))["power_state"] == "stopped"
    vols = (await env.get("/vms/hr/volumes"))["items"]
    assert {v["status"] for v in vols} == {"in_use"}  # usable meanwhile
    await env.ok(await env.c.post("/vms/hr/snapshots/s/revert"))
    v = await env.get("/vms/hr")
    assert (v["status"], v["power_state"]) == ("running", "running")
    assert (await env.get("/vms/hr/snapshots/s"))["status"] == "ready"


async def test_a_delete_failing_half_way_goes_on_when_deleted_again(env: Env) -> None:
    vm = await _vm(env, "hd", start=False)
    await env.ok(await env.c.post("/vms/hd/snapshots", json={"name": "s"}))
    used = await env.snapshots_used()
    faults = env.runtimes[vm["host_id"]].faults
    faults.fail_next("agent.snapshot.rebase", times=FORWARD_ATTEMPTS)  # the first node's merge
    op = await env.op(await env.c.delete("/vms/hd/snapshots/s"))
    assert op["status"] == "failed", op
    vs = await env.get("/vms/hd/snapshots/s")
    assert vs["status"] == "error" and "delete it again" in vs["error"]
    assert len(vs["snapshots"]) == 2  # nothing merged yet
    await env.ok(await env.c.delete("/vms/hd/snapshots/s"))
    assert (await env.get("/vms/hd/snapshots"))["items"] == []
    assert await env.snapshots_used() == used - 2
