"""Deletion policies and the recycle bin through REST with a simulator agent: delayed deletes of
VMs, volumes and images (hidden, renamed, still holding their resources), restore (also under
a new name), expunge by hand and when the retention has passed, ``never`` and ``immediate``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.runtime import HostRuntime
from corral.server.services import recycle
from corral.up import Stack
from tests.integration.identity.admin import refused
from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.asyncio(loop_scope="module")

DELAYED = {"policy": "delayed", "retention_hours": 24}


class Env:
    def __init__(self, stack: Stack, c: httpx.AsyncClient, runtime: HostRuntime) -> None:
        self.stack, self.c, self.runtime = stack, c, runtime

    async def ok(self, r: httpx.Response) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        op = await wait_op(self.c, r.json())
        assert op["status"] == "succeeded", op
        return op

    async def policies(self, **kinds: dict[str, Any]) -> None:
        body = {k: kinds.get(k, DELAYED) for k in ("vm", "volume", "image")}
        await self.ok(await self.c.put("/deletion-policies", json=body))

    async def bin(self, kind: str | None = None) -> dict[str, dict[str, Any]]:
        r = await self.c.get("/recycle-bin", params={"kind": kind} if kind else {})
        assert r.status_code == 200, r.text
        return {e["name"]: e for e in r.json()}

    async def quota(self, project_id: str) -> dict[str, int]:
        q = (await self.c.get(f"/projects/{project_id}/quota")).json()
        return {k: q[k]["used"] for k in ("vms", "vcpus", "memory_mb", "volume_gb", "images")}

    async def host_cpus_used(self) -> int:
        used: int = (await self.c.get("/hosts")).json()["items"][0]["capacity"]["cpus_used"]
        return used


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("recycle-sim")
    async with running_stack(tmp) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        assert (await c.post("/storage-pools", json=body)).status_code == 202
        yield Env(stack, c, next(iter(stack.agent.runtimes.values())))


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    await env.policies()
    yield
    await env.policies(
        vm={"policy": "immediate"}, volume={"policy": "immediate"}, image={"policy": "immediate"}
    )
    for entry in (await env.bin()).values():
        await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"))
    for vm in (await env.c.get("/vms")).json()["items"]:
        await env.ok(await env.c.delete(f"/vms/{vm['id']}"))
    for v in (await env.c.get("/volumes")).json()["items"]:
        if v["attachments"]:
            await env.ok(await env.c.post(f"/volumes/{v['id']}/detach"))
        await env.ok(await env.c.delete(f"/volumes/{v['id']}"))


async def _vm(env: Env, name: str, start: bool = True) -> dict[str, Any]:
    body = {"name": name, "image": "tiny", "cpus": 1, "memory_mb": 64, "start": start}
    await env.ok(await env.c.post("/vms", json=body))
    return (await env.c.get(f"/vms/{name}")).json()  # type: ignore[no-any-return]


async def test_a_deleted_vm_waits_in_the_bin_and_comes_back(env: Env) -> None:
    vm = await _vm(env, "web")
    quota, cpus = await env.quota(vm["project_id"]), await env.host_cpus_used()
    op = await env.ok(await env.c.delete("/vms/web"))
    assert op["type"] == "vm.recycle"
    assert (await env.c.get("/vms/web")).status_code == 404
    assert (await env.c.get(f"/vms/{vm['id']}")).status_code == 404
    assert "web" not in {v["name"] for v in (await env.c.get("/vms")).json()["items"]}
    entry = (await env.bin("vm"))["web"]
    assert (entry["kind"], entry["resource_id"]) == ("vm", vm["id"])
    assert entry["expunge_at"] is not None
    # still there physically: stopped on its host, claim and quota kept
    assert env.runtime.compute.power_state is not None
    assert await env.runtime.compute.power_state(vm["id"]) == "stopped"
    assert await env.quota(vm["project_id"]) == quota
    assert await env.host_cpus_used() == cpus
    # its name is free meanwhile: a new VM takes it, so the restore needs another name
    await _vm(env, "web", start=False)
    refused(await env.c.post(f"/recycle-bin/{entry['id']}/restore"), 409, "name_taken")
    body = {"name": "web-old"}
    op = await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/restore", json=body))
    assert op["type"] == "vm.restore"
    back = (await env.c.get("/vms/web-old")).json()
    assert (back["id"], back["status"]) == (vm["id"], "stopped")
    assert "web" not in await env.bin()
    await env.ok(await env.c.post("/vms/web-old/start"))


async def test_expunge_deletes_for_good_and_gives_everything_back(env: Env) -> None:
    vm = await _vm(env, "gone")
    before_vm = await env.quota(vm["project_id"])
    await env.ok(await env.c.delete("/vms/gone"))
    entry = (await env.bin())["gone"]
    op = await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"))
    assert op["type"] == "vm.delete"
    after = await env.quota(vm["project_id"])
    assert after["vms"] == before_vm["vms"] - 1 and after["vcpus"] == before_vm["vcpus"] - 1
    assert "gone" not in await env.bin()
    refused(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"), 404, "not_found")


async def test_volumes_and_images_go_to_the_bin_too(env: Env) -> None:
    await _vm(env, "host-vm")
    body = {"name": "data", "size_gb": 1, "pool": "loc", "vm": "host-vm"}
    await env.ok(await env.c.post("/volumes", json=body))
    await env.ok(await env.c.post("/volumes/data/detach"))
    vol = (await env.c.get("/volumes/data")).json()
    await env.ok(await env.c.delete("/volumes/data"))
    assert (await env.c.get("/volumes/data")).status_code == 404
    refused(
        await env.c.post(f"/volumes/{vol['id']}/attach", json={"vm": "host-vm"}), 404, "not_found"
    )
    entry = (await env.bin("volume"))["data"]
    await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/restore"))
    assert (await env.c.get("/volumes/data")).json()["status"] == "available"
    await env.ok(await env.c.delete("/volumes/data"))
    entry = (await env.bin("volume"))["data"]
    op = await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"))
    assert op["type"] == "volume.delete"
    assert (await env.c.get(f"/volumes/{vol['id']}")).status_code == 404

    img = await upload_image(
        env.c, "gold", make_qcow2(env.stack.server.services.settings.data_dir / "g.qcow2")
    )
    stored = env.stack.server.services.settings.image_dir / f"{img['id']}.img"
    await env.ok(await env.c.delete("/images/gold"))
    body = {"name": "x", "image": "gold", "cpus": 1, "memory_mb": 64}
    refused(await env.c.post("/vms", json=body), 404, "not_found")
    assert stored.is_file()  # kept while in the bin
    entry = (await env.bin("image"))["gold"]
    await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"))
    assert not stored.exists()


async def test_never_keeps_and_immediate_or_expunge_true_skip_the_bin(env: Env) -> None:
    await env.policies(vm={"policy": "never"})
    await _vm(env, "keep", start=False)
    await env.ok(await env.c.delete("/vms/keep"))
    entry = (await env.bin())["keep"]
    assert entry["expunge_at"] is None
    refused(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"), 409, "invalid_state")
    await env.policies()  # delayed again: now it may go
    await env.ok(await env.c.post(f"/recycle-bin/{entry['id']}/expunge"))

    vm = await _vm(env, "now", start=False)
    op = await env.ok(await env.c.delete("/vms/now", params={"expunge": "true"}))
    assert op["type"] == "vm.delete" and "now" not in await env.bin()
    assert (await env.c.get(f"/vms/{vm['id']}")).status_code == 404
    await env.policies(vm={"policy": "immediate"})
    await _vm(env, "now2", start=False)
    assert (await env.ok(await env.c.delete("/vms/now2")))["type"] == "vm.delete"
    policies = (await env.c.get("/deletion-policies")).json()
    assert policies["vm"]["policy"] == "immediate" and policies["image"]["policy"] == "delayed"


async def test_entries_are_expunged_when_their_retention_has_passed(env: Env) -> None:
    await env.policies(vm={"policy": "delayed", "retention_hours": 0.0003})  # about 1 s
    vm = await _vm(env, "short", start=False)
    await env.ok(await env.c.delete("/vms/short"))
    assert "short" in await env.bin()
    assert await recycle.expunge_due(env.stack.server.services) == 0  # not yet
    await asyncio.sleep(1.3)
    assert await recycle.expunge_due(env.stack.server.services) == 1
    for _ in range(100):
        if (await env.c.get(f"/vms/{vm['id']}")).status_code == 404 and not [
            v for v in (await env.c.get("/vms")).json()["items"] if v["id"] == vm["id"]
        ]:
            break
        await asyncio.sleep(0.05)
    assert "short" not in await env.bin()
    assert not [v for v in (await env.c.get("/vms")).json()["items"] if v["id"] == vm["id"]]


async def test_a_failed_recycle_leaves_the_vm_as_it_was(env: Env) -> None:
    vm = await _vm(env, "stay")
    env.stack.server.services.engine.faults.inject("vm.recycle", "bin", "before")
    r = await env.c.delete("/vms/stay")
    op = await wait_op(env.c, r.json())
    assert op["status"] == "failed"
    back = (await env.c.get("/vms/stay")).json()
    assert (back["id"], back["status"], back["power_state"]) == (vm["id"], "running", "running")
    assert "stay" not in await env.bin()


async def test_a_pools_copy_of_an_image_goes_with_the_image_and_its_last_volume(
    env: Env,
) -> None:
    from sqlalchemy import select

    from corral.server.db.tables import PoolImageCopyRow
    from corral.server.services import pool_images

    svc = env.stack.server.services
    await env.policies(image={"policy": "immediate"})
    img = await upload_image(env.c, "based", make_qcow2(svc.settings.data_dir / "b.qcow2"))
    await _vm(env, "holder")
    body = {"name": "on-img", "size_gb": 1, "pool": "loc", "image": "based", "vm": "holder"}
    await env.ok(await env.c.post("/volumes", json=body))

    async def copies() -> list[str]:
        async with svc.sessionmaker() as s:
            return list(await s.scalars(select(PoolImageCopyRow.image_id)))

    assert await copies() == [img["id"]]
    await env.ok(await env.c.delete("/images/based"))  # a volume is still made on the copy
    assert await pool_images.sweep(svc) == 0 and await copies() == [img["id"]]
    await env.ok(await env.c.post("/volumes/on-img/detach"))
    await env.ok(await env.c.delete("/volumes/on-img", params={"expunge": "true"}))
    assert await pool_images.sweep(svc) == 1 and await copies() == []
