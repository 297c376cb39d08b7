"""Data volumes through REST with simulator agents: attach (first use creates the volume on the
pool), live grow, I/O limits, detach, delete, a VM's delete keeping its volumes, local-pool host
binding; and all or nothing: a failure at any step of attach leaves the volume as it was (not on
the pool, not attached, no device reserved, nothing in the VM's stored spec)."""

from __future__ import annotations

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
from corral.server.workflows.engine import FORWARD_ATTEMPTS, FaultPoints
from corral.server.workflows.volume_attach import VOLUME_ATTACH
from corral.up import Stack
from tests.integration.identity.admin import done, refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.fault_env import WHEN
from tests.support.stack import api_client, running_stack, upload_image, wait_op

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

    def backend(self, host_id: str) -> SimulatedBackend:
        b = self.runtimes[host_id].backends.for_pool(
            PoolRef(id=self.pool_id, type="local", settings={})
        )
        assert isinstance(b, SimulatedBackend)
        return b

    def on_pool(self, host_id: str) -> dict[str, int]:
        return dict(self.backend(host_id).volumes(self.pool_id))

    def spec_disks(self, host_id: str, vm_id: str) -> list[tuple[str, str, int]]:
        stored = self.runtimes[host_id].specs.get(vm_id)
        assert stored is not None
        return [(d.volume.volume_id, d.device, d.volume.size_gb) for d in stored.spec.disks]

    async def op(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        return await wait_op(self.c, r.json())

    async def vol(self, ref: str) -> dict[str, Any]:
        r = await self.c.get(f"/volumes/{ref}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("volumes-sim")
    async with running_stack(tmp, sim_hosts=2) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        pool_id = done(await c.post("/storage-pools", json=body))["target_id"]
        hosts = (await c.get("/hosts")).json()["items"]
        runtimes = {
            h["id"]: rt
            for h in hosts
            for path, rt in stack.agent.runtimes.items()
            if h["url"].rstrip("/").endswith(path)
        }
        assert len(runtimes) == 2
        e = Env(stack, c, pool_id, runtimes)
        for i, host_id in enumerate(sorted(runtimes)):
            body = {"name": f"vm{i}", "image": "tiny", "cpus": 1, "memory_mb": 128,
                    "host": host_id}  # fmt: skip
            assert (await e.op(await c.post("/vms", json=body)))["status"] == "succeeded"
        yield e


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.faults.clear()
    for rt in env.runtimes.values():
        rt.faults.clear()
    for v in (await env.c.get("/volumes", params={"limit": 1000})).json()["items"]:
        for a in v["attachments"]:
            await env.op(await env.c.post(f"/volumes/{v['id']}/detach", params={"vm": a["vm_id"]}))
        await env.op(await env.c.delete(f"/volumes/{v['id']}"))


async def _vm(env: Env, name: str) -> dict[str, Any]:
    return (await env.c.get(f"/vms/{name}")).json()  # type: ignore[no-any-return]


async def test_attach_grow_limit_detach_delete(env: Env) -> None:
    vm = await _vm(env, "vm0")
    host = vm["host_id"]
    op = await env.op(
        await env.c.post("/volumes", json={"name": "d1", "size_gb": 2, "pool": "loc", "vm": "vm0"})
    )
    assert (op["type"], op["status"]) == ("volume.attach", "succeeded"), op
    v = await env.vol("d1")
    assert (v["status"], v["instantiated"], v["host_id"]) == ("in_use", True, host)
    assert v["attachments"] == [{"vm_id": vm["id"], "device": "vdb"}]
    assert env.on_pool(host) == {v["id"]: 2}
    assert env.spec_disks(host, vm["id"]) == [(v["id"], "vdb", 2)]
    listed = (await env.c.get("/vms/vm0/volumes")).json()
    assert [x["name"] for x in listed["items"]] == ["d1"]

    # a second volume takes the next device
    done(await env.c.post("/volumes", json={"name": "d2", "size_gb": 1, "pool": "loc"}))
    assert (await env.vol("d2"))["instantiated"] is False
    op = await env.op(await env.c.post("/volumes/d2/attach", json={"vm": "vm0"}))
    assert op["status"] == "succeeded", op
    assert (await env.vol("d2"))["attachments"][0]["device"] == "vdc"

    # live grow, then I/O limits applied to the VM
    op = await env.op(await env.c.post("/volumes/d1/resize", json={"size_gb": 5}))
    assert op["status"] == "succeeded", op
    assert (await env.vol("d1"))["size_gb"] == 5
    assert env.spec_disks(host, vm["id"])[0] == (v["id"], "vdb", 5)
    op = await env.op(await env.c.patch("/volumes/d1", json={"qos": {"total_iops_sec": 300}}))
    assert (op["type"], op["status"]) == ("volume.qos", "succeeded"), op
    assert (await env.vol("d1"))["qos"]["total_iops_sec"] == 300
    stored = env.runtimes[host].specs.get(vm["id"])
    assert stored is not None and stored.spec.disks[0].qos.total_iops_sec == 300

    # in use: not deletable, not attachable elsewhere
    refused(await env.c.delete("/volumes/d1"), 409, "in_use")
    refused(await env.c.post("/volumes/d1/attach", json={"vm": "vm1"}), 409, "in_use")

    # a VM redefinition (offline resize) keeps its data disks
    assert (await env.op(await env.c.post("/vms/vm0/stop")))["status"] == "succeeded"
    op = await env.op(await env.c.post("/vms/vm0/resize", json={"cpus": 2}))
    assert op["status"] == "succeeded", op
    assert [d[1] for d in env.spec_disks(host, vm["id"])] == ["vdb", "vdc"]
    assert (await env.op(await env.c.post("/vms/vm0/start")))["status"] == "succeeded"

    op = await env.op(await env.c.post("/volumes/d1/detach"))
    assert op["status"] == "succeeded", op
    v1 = await env.vol("d1")
    assert (v1["status"], v1["attachments"]) == ("available", [])
    assert [d[0] for d in env.spec_disks(host, vm["id"])] == [(await env.vol("d2"))["id"]]

    op = await env.op(await env.c.delete("/volumes/d1"))
    assert op["status"] == "succeeded", op
    assert v["id"] not in env.on_pool(host)
    refused(await env.c.get("/volumes/d1"), 404, "not_found")


async def test_local_volume_stays_on_its_host_and_survives_its_vm(env: Env) -> None:
    body = {"name": "t", "image": "tiny", "cpus": 1, "memory_mb": 128}
    host0 = (await _vm(env, "vm0"))["host_id"]
    assert (await env.op(await env.c.post("/vms", json={**body, "host": host0})))[
        "status"
    ] == "succeeded"
    done(await env.c.post("/volumes", json={"name": "keep", "size_gb": 1, "pool": "loc"}))
    assert (await env.op(await env.c.post("/volumes/keep/attach", json={"vm": "t"})))[
        "status"
    ] == "succeeded"
    v = await env.vol("keep")
    assert v["host_id"] == host0

    # the VM goes, the volume stays (detached, still on its host's pool)
    assert (await env.op(await env.c.delete("/vms/t")))["status"] == "succeeded"
    v = await env.vol("keep")
    assert (v["status"], v["attachments"], v["instantiated"]) == ("available", [], True)
    assert v["id"] in env.on_pool(host0)

    # local pool: only VMs on that host can take it
    err = refused(
        await env.c.post("/volumes/keep/attach", json={"vm": "vm1"}), 409, "invalid_state"
    )
    assert err["context"]["volume_host_id"] == host0
    assert (await env.vol("keep"))["status"] == "available"


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VOLUME_ATTACH.steps for w in WHEN])
async def test_attach_fault_at_any_step_leaves_nothing(env: Env, step: str, when: str) -> None:
    env.faults.inject(VOLUME_ATTACH.type, step, when)  # type: ignore[arg-type]
    vm = await _vm(env, "vm1")
    host = vm["host_id"]
    done(await env.c.post("/volumes", json={"name": "f", "size_gb": 1, "pool": "loc"}))
    vid = (await env.vol("f"))["id"]
    op = await env.op(await env.c.post("/volumes/f/attach", json={"vm": "vm1"}))
    if VOLUME_ATTACH.is_forward(VOLUME_ATTACH.step_index(step)):
        assert op["status"] == "succeeded", op  # retried past the point of no return
        assert (await env.vol("f"))["status"] == "in_use"
        return
    assert op["status"] == "failed", op
    v = await env.vol("f")
    assert (v["status"], v["attachments"], v["instantiated"], v["host_id"]) == (
        "available", [], False, None
    )  # fmt: skip
    assert vid not in env.on_pool(host)
    assert env.spec_disks(host, vm["id"]) == []


@pytest.mark.parametrize(
    "fault",
    ["agent.volume.create", "volume.create", "agent.volume.attach", "vm.attach_disk"],
)
async def test_attach_agent_fault_leaves_nothing(env: Env, fault: str) -> None:
    vm = await _vm(env, "vm1")
    host = vm["host_id"]
    env.runtimes[host].faults.fail_next(fault)
    op = await env.op(
        await env.c.post("/volumes", json={"name": "g", "size_gb": 1, "pool": "loc", "vm": "vm1"})
    )
    assert op["status"] == "failed", op
    assert env.runtimes[host].faults.pending() == {}
    v = await env.vol("g")
    assert (v["status"], v["attachments"], v["instantiated"]) == ("available", [], False)
    assert v["id"] not in env.on_pool(host)
    assert env.spec_disks(host, vm["id"]) == []
    # and it works once the fault is gone
    op = await env.op(await env.c.post("/volumes/g/attach", json={"vm": "vm1"}))
    assert op["status"] == "succeeded", op


async def test_failed_detach_keeps_the_volume_attached(env: Env) -> None:
    vm = await _vm(env, "vm1")
    host = vm["host_id"]
    op = await env.op(
        await env.c.post("/volumes", json={"name": "h", "size_gb": 1, "pool": "loc", "vm": "vm1"})
    )
    assert op["status"] == "succeeded", op
    env.runtimes[host].faults.fail_next("agent.volume.detach")
    op = await env.op(await env.c.post("/volumes/h/detach"))
    assert op["status"] == "failed", op
    v = await env.vol("h")
    assert (v["status"], len(v["attachments"])) == ("in_use", 1)
    assert len(env.spec_disks(host, vm["id"])) == 1


async def test_failed_grow_gives_quota_and_pool_back(env: Env) -> None:
    vm = await _vm(env, "vm1")
    host = vm["host_id"]
    op = await env.op(
        await env.c.post("/volumes", json={"name": "r", "size_gb": 1, "pool": "loc", "vm": "vm1"})
    )
    assert op["status"] == "succeeded", op
    before = (await env.c.get("/storage-pools/loc")).json()["capacity"]["allocated_gb"]
    env.runtimes[host].faults.fail_next("agent.volume.resize")
    op = await env.op(await env.c.post("/volumes/r/resize", json={"size_gb": 4}))
    assert op["status"] == "failed", op
    v = await env.vol("r")
    assert (v["size_gb"], v["status"]) == (1, "in_use")
    assert (await env.c.get("/storage-pools/loc")).json()["capacity"]["allocated_gb"] == before


async def test_delete_is_retried_past_its_point_of_no_return(env: Env) -> None:
    vm = await _vm(env, "vm1")
    host = vm["host_id"]
    op = await env.op(
        await env.c.post("/volumes", json={"name": "z", "size_gb": 1, "pool": "loc", "vm": "vm1"})
    )
    assert op["status"] == "succeeded", op
    vid = (await env.vol("z"))["id"]
    assert (await env.op(await env.c.post("/volumes/z/detach")))["status"] == "succeeded"
    env.runtimes[host].faults.fail_next("volume.delete", times=FORWARD_ATTEMPTS - 1)
    op = await env.op(await env.c.delete("/volumes/z"))
    assert op["status"] == "succeeded", op
    assert vid not in env.on_pool(host)
    refused(await env.c.get("/volumes/z"), 404, "not_found")


async def _pool_reached(env: Env, pool: str, hosts: int) -> None:
    """Wait until ``hosts`` agents report the pool usable (the pool sync is asynchronous)."""
    import asyncio

    for _ in range(200):
        if (await env.c.get(f"/storage-pools/{pool}")).json()["hosts"]["ok"] >= hosts:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pool {pool} not reached by {hosts} hosts")


async def test_vm_created_with_volumes(env: Env) -> None:
    await _pool_reached(env, "loc", 2)
    body = {"name": "withvols", "image": "tiny", "cpus": 1, "memory_mb": 128,
            "volumes": [{"size_gb": 2, "pool": "loc"}, {"size_gb": 1, "pool": "loc",
                                                         "name": "logs"}]}  # fmt: skip
    op = await env.op(await env.c.post("/vms", json=body))
    assert op["status"] == "succeeded", op
    vm = await _vm(env, "withvols")
    page = (await env.c.get("/vms/withvols/volumes", params={"sort": "name"})).json()
    got = {v["name"]: v for v in page["items"]}
    assert set(got) == {"withvols-data1", "logs"}
    for v in got.values():
        assert (v["status"], v["instantiated"], v["host_id"]) == ("in_use", True, vm["host_id"])
        assert v["id"] in env.on_pool(vm["host_id"])
    devices = {v["attachments"][0]["device"] for v in got.values()}
    assert devices == {"vdb", "vdc"}
    assert sorted(d[1] for d in env.spec_disks(vm["host_id"], vm["id"])) == ["vdb", "vdc"]
    assert (await env.op(await env.c.delete("/vms/withvols")))["status"] == "succeeded"
    assert (await env.vol("logs"))["status"] == "available"  # volumes outlive their VM


async def test_vm_with_volumes_goes_only_where_the_pools_are(env: Env) -> None:
    await _pool_reached(env, "loc", 2)
    done(await env.c.post("/storage-pools", json={"name": "nowhere", "type": "local",
                                                  "settings": {"path": "/nonexistent"}}))  # fmt: skip
    before = (await env.c.get("/volumes")).json()["total"]
    body = {"name": "lost", "image": "tiny", "cpus": 1, "memory_mb": 128,
            "volumes": [{"size_gb": 1, "pool": "nowhere"}]}  # fmt: skip
    refused(await env.c.post("/vms", json=body), 409, "no_host_available")
    refused(await env.c.get("/vms/lost"), 404, "not_found")
    assert (await env.c.get("/volumes")).json()["total"] == before
    done(await env.c.delete("/storage-pools/nowhere"))
    # a name taken is refused before anything is made
    done(await env.c.post("/volumes", json={"name": "taken", "size_gb": 1, "pool": "loc"}))
    body = {**body, "volumes": [{"size_gb": 1, "pool": "loc", "name": "taken"}]}
    refused(await env.c.post("/vms", json=body), 409, "name_taken")


@pytest.mark.parametrize("fault", ["agent.volume.create", "vm.define", "vm.start"])
async def test_vm_create_with_volumes_rolls_back_completely(env: Env, fault: str) -> None:
    await _pool_reached(env, "loc", 2)
    host = (await _vm(env, "vm0"))["host_id"]
    env.runtimes[host].faults.fail_next(fault)
    before = (await env.c.get("/storage-pools/loc")).json()["capacity"]["allocated_gb"]
    body = {"name": "rb", "image": "tiny", "cpus": 1, "memory_mb": 128, "host": host,
            "volumes": [{"size_gb": 1, "pool": "loc"}, {"size_gb": 1, "pool": "loc"}]}  # fmt: skip
    op = await env.op(await env.c.post("/vms", json=body))
    assert op["status"] == "failed", op
    refused(await env.c.get("/vms/rb"), 404, "not_found")
    assert (await env.c.get("/volumes", params={"q": "name~rb-data"})).json()["total"] == 0
    assert not [v for v in env.on_pool(host) if v not in await _known_volume_ids(env)]
    assert (await env.c.get("/storage-pools/loc")).json()["capacity"]["allocated_gb"] == before


async def _known_volume_ids(env: Env) -> set[str]:
    return {v["id"] for v in (await env.c.get("/volumes", params={"limit": 1000})).json()["items"]}


async def test_volume_from_an_image(env: Env, tmp_path: Path) -> None:
    img = await upload_image(env.c, "seed", make_qcow2(tmp_path / "seed.qcow2", "1536M"))
    bad = [
        ({"name": "s", "size_gb": 1, "pool": "loc", "image": "seed"}, 422, "invalid_input"),
        ({"name": "s", "size_gb": 2, "pool": "loc", "image": "nope"}, 404, "not_found"),
    ]
    for body, status, code in bad:
        refused(await env.c.post("/volumes", json=body), status, code)
    done(await env.c.post("/volumes", json={"name": "s", "size_gb": 2, "pool": "loc",
                                            "image": "seed"}))  # fmt: skip
    v = await env.vol("s")
    assert (v["image_id"], v["instantiated"]) == (img["id"], False)
    # the copy is made at the first attach: until then the image must stay
    err = refused(await env.c.delete("/images/seed"), 409, "in_use")
    assert err["context"]["volumes"] == ["s"]
    op = await env.op(await env.c.post("/volumes/s/attach", json={"vm": "vm1"}))
    assert op["status"] == "succeeded", op
    host = (await _vm(env, "vm1"))["host_id"]
    assert env.on_pool(host)[v["id"]] == 2
    done(await env.c.delete("/images/seed"))  # copied: the volume no longer needs it
    assert (await env.vol("s"))["image_id"] is None


async def test_vm_created_with_a_volume_from_an_image(env: Env, tmp_path: Path) -> None:
    await _pool_reached(env, "loc", 2)
    img = await upload_image(env.c, "seed2", make_qcow2(tmp_path / "seed2.qcow2", "1536M"))
    body = {"name": "fromimg", "image": "tiny", "cpus": 1, "memory_mb": 128,
            "volumes": [{"size_gb": 1, "pool": "loc", "image": "seed2"}]}  # fmt: skip
    err = refused(await env.c.post("/vms", json=body), 422, "invalid_input")
    assert err["context"]["min_size_gb"] == 2
    refused(await env.c.get("/vms/fromimg"), 404, "not_found")
    body["volumes"] = [{"size_gb": 2, "pool": "loc", "image": "seed2"}]
    op = await env.op(await env.c.post("/vms", json=body))
    assert op["status"] == "succeeded", op
    vol = await env.vol("fromimg-data1")
    assert (vol["image_id"], vol["instantiated"], vol["status"]) == (img["id"], True, "in_use")
    assert (await env.op(await env.c.delete("/vms/fromimg")))["status"] == "succeeded"
    done(await env.c.delete("/images/seed2"))


async def test_pool_delete_with_cascade(env: Env) -> None:
    cluster = (await env.c.get("/clusters")).json()["items"][0]["name"]
    body = {"name": "tmp", "type": "local", "settings": {"path": "/srv/tmp-pool"},
            "clusters": [cluster]}  # fmt: skip
    done(await env.c.post("/storage-pools", json=body))
    await _pool_reached(env, "tmp", 2)
    await env.op(await env.c.post("/volumes", json={"name": "c1", "size_gb": 1, "pool": "tmp",
                                                    "vm": "vm1"}))  # fmt: skip
    done(await env.c.post("/volumes", json={"name": "c2", "size_gb": 1, "pool": "tmp"}))
    host = (await _vm(env, "vm1"))["host_id"]
    c1 = (await env.vol("c1"))["id"]
    done(await env.c.patch("/storage-pools/tmp", json={"state": "maintenance"}))
    refused(await env.c.delete("/storage-pools/tmp"), 409, "in_use")
    err = refused(
        await env.c.delete("/storage-pools/tmp", params={"cascade": "true"}), 409, "in_use"
    )
    assert err["context"]["volumes"] == ["c1"]  # attached: detach first
    assert (await env.vol("c2"))["status"] == "available"  # nothing changed
    assert (await env.op(await env.c.post("/volumes/c1/detach")))["status"] == "succeeded"
    pool_id = (await env.c.get("/storage-pools/tmp")).json()["id"]
    assert c1 in env.backend(host).volumes(pool_id)
    op = await env.op(await env.c.delete("/storage-pools/tmp", params={"cascade": "true"}))
    assert (op["type"], op["status"]) == ("storage_pool.delete", "succeeded"), op
    assert c1 not in env.backend(host).volumes(pool_id)  # the file went too
    refused(await env.c.get("/storage-pools/tmp"), 404, "not_found")
    refused(await env.c.get("/volumes/c1"), 404, "not_found")
    refused(await env.c.get("/volumes/c2"), 404, "not_found")
