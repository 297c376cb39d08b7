"""Images captured from a VM disk, a volume or a snapshot, and full VM clones, through REST with
a simulator agent: what may be captured when, the image store holding the agent's bytes, clones
made from one base, and failures at every step that leave no image, VM or claim behind.

The simulated host keeps an image cache (``sim_fetch_images``): a captured disk's bytes (``b"
simulated disk of <vm id>\n"``) stay there, and a full clone's base is published from there
(``image.publish``) after the clones exist."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from corral.agent.publish import ImagePublish
from corral.agent.runtime import HostRuntime
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

    async def failed(self, r: httpx.Response) -> dict[str, Any]:
        op = await self.op(r)
        assert op["status"] == "failed", op
        return op

    async def names(self, kind: str) -> set[str]:
        return {
            i["name"] for i in (await self.c.get(f"/{kind}", params={"limit": 500})).json()["items"]
        }

    async def quota(self) -> dict[str, int]:
        pid = (await self.c.get("/vms/src")).json()["project_id"]
        q = (await self.c.get(f"/projects/{pid}/quota")).json()
        return {k: q[k]["used"] for k in ("vms", "images", "vcpus", "memory_mb")}

    def store_files(self) -> set[str]:
        return {p.name for p in self.stack.server.services.settings.image_dir.iterdir()}

    async def capture(self, name: str, **source: str) -> httpx.Response:
        return await self.c.post("/images", json={"name": name, "source": source})

    async def publish_op(self, image_id: str) -> dict[str, Any]:
        """The image's ``image.publish`` operation (as it is now)."""
        q = {"q": f"type=image.publish,target_id={image_id}"}
        for _ in range(200):
            items = (await self.c.get("/operations", params=q)).json()["items"]
            if items:
                return items[0]  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no image.publish operation for image {image_id}")

    async def published(self, image_id: str) -> dict[str, Any]:
        """The image's ``image.publish`` operation once done."""
        return await wait_op(self.c, await self.publish_op(image_id))

    def stored(self, image_id: str) -> Path:
        return self.stack.server.services.settings.image_dir / f"{image_id}.img"


class Gate:
    """Holds the agent's ``image.publish`` uploads until ``open()``."""

    def __init__(self, runtime: HostRuntime) -> None:
        self.publish: ImagePublish = runtime.executor.publish
        self.original = self.publish.upload
        self.opened = asyncio.Event()
        self.publish.upload = self._upload

    async def _upload(self, path: str, source: Path) -> tuple[int, str]:
        await self.opened.wait()
        return await self.original(path, source)

    def open(self) -> None:
        self.opened.set()
        self.publish.upload = self.original


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("clone-sim")
    overrides = {"sim_fetch_images": True}
    async with running_stack(tmp, agent_overrides=overrides) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        cluster = (await c.get("/clusters")).json()["items"][0]["name"]
        body = {"name": "loc", "type": "local", "settings": {"path": str(tmp / "pool")},
                "clusters": [cluster]}  # fmt: skip
        assert (await c.post("/storage-pools", json=body)).status_code == 202
        e = Env(stack, c, next(iter(stack.agent.runtimes.values())))
        await e.ok(await c.post("/vms", json={"name": "src", "image": "tiny", "cpus": 1,
                                              "memory_mb": 128, "start": False}))  # fmt: skip
        yield e


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: Env) -> AsyncIterator[None]:
    yield
    env.stack.server.services.engine.faults.clear()
    env.runtime.faults.clear()
    q = {"q": "type=image.publish", "limit": 500}
    for op in (await env.c.get("/operations", params=q)).json()["items"]:
        await wait_op(env.c, op)  # no publication ends in the next test
    for vm in (await env.c.get("/vms", params={"limit": 500})).json()["items"]:
        if vm["name"] != "src":
            await env.ok(await env.c.delete(f"/vms/{vm['id']}"))
    if (await env.c.get("/vms/src")).json()["status"] != "stopped":
        await env.ok(await env.c.post("/vms/src/stop", json={"force": True}))
    for v in (await env.c.get("/volumes")).json()["items"]:
        if v["attachments"]:
            await env.op(await env.c.post(f"/volumes/{v['id']}/detach"))
        await env.op(await env.c.delete(f"/volumes/{v['id']}"))
    in_use = {(await env.c.get("/vms/src")).json()["image_id"]}
    images = (await env.c.get("/images")).json()["items"]
    for img in images:  # the source's layers (linked clones) stay: they are its disk
        if img["id"] in in_use and img["parent_id"]:
            in_use.add(img["parent_id"])
    for img in sorted(images, key=lambda i: i["parent_id"] is None):  # layers first
        if img["name"] != "tiny" and img["id"] not in in_use:
            assert (await env.c.delete(f"/images/{img['id']}")).status_code == 202, img


async def test_capture_a_stopped_vm_disk_and_boot_a_vm_from_it(env: Env) -> None:
    src = (await env.c.get("/vms/src")).json()
    op = await env.ok(await env.capture("golden", vm="src"))
    img = (await env.c.get("/images/golden")).json()
    assert op["type"] == "image.capture" and op["target_id"] == img["id"]
    assert (img["status"], img["source_type"], img["source_id"]) == ("ready", "vm", src["id"])
    stored = env.stack.server.services.settings.image_dir / f"{img['id']}.img"
    assert img["size_bytes"] == stored.stat().st_size > 0
    await env.ok(await env.c.post("/vms", json={"name": "from-golden", "image": "golden",
                                                "cpus": 1, "memory_mb": 64}))  # fmt: skip
    assert (await env.c.get("/vms/from-golden")).json()["status"] == "running"


async def test_a_running_vm_is_copied_live(env: Env) -> None:
    await env.ok(await env.c.post("/vms/src/start"))
    calls = env.runtime.compute.calls["vm.copy_root"]  # type: ignore[attr-defined]
    await env.ok(await env.capture("live", vm="src"))
    assert env.runtime.compute.calls["vm.copy_root"] == calls + 1  # type: ignore[attr-defined]
    assert (await env.c.get("/images/live")).json()["status"] == "ready"
    await env.ok(await env.c.post("/vms/src/clone", json={"name": "hot", "start": False}))
    assert (await env.c.get("/vms/hot")).json()["status"] == "stopped"
    assert (await env.c.get("/vms/src")).json()["status"] == "running"  # never stopped


async def test_a_busy_source_is_refused_and_nothing_is_recorded(env: Env) -> None:
    await env.ok(await env.c.post("/vms/src/start"))
    before = (await env.names("images"), await env.quota(), env.store_files())
    body = {"name": "d", "size_gb": 1, "pool": "loc", "vm": "src"}
    await env.ok(await env.c.post("/volumes", json=body))
    refused(await env.capture("nope", volume="d"), 409, "invalid_state", vm="src")
    for mode in ("linked", "instant"):  # they freeze the disk: the source must be stopped
        r = await env.c.post("/vms/src/clone", json={"name": "c", "mode": mode})
        refused(r, 409, "invalid_state", vm="src")
    assert (await env.names("images"), await env.quota(), env.store_files()) == before
    assert (await env.c.get("/volumes/d")).json()["status"] == "in_use"
    r = await env.c.post(
        "/images", json={"name": "x", "url": "http://a/b", "source": {"vm": "src"}}
    )
    refused(r, 422, "invalid_input")
    r = await env.c.post("/images", json={"name": "x", "source": {"vm": "src", "volume": "d"}})
    refused(r, 422, "invalid_input")


async def test_capture_a_volume_and_a_snapshot_of_a_running_vm(env: Env) -> None:
    await env.ok(await env.c.post("/vms/src/start"))
    body = {"name": "d", "size_gb": 1, "pool": "loc", "vm": "src"}
    await env.ok(await env.c.post("/volumes", json=body))
    await env.ok(await env.c.post("/volumes/d/snapshots", json={"name": "s1"}))
    await env.ok(await env.capture("from-snap", snapshot="s1"))  # the VM runs: a frozen file
    img = (await env.c.get("/images/from-snap")).json()
    snap = (await env.c.get("/snapshots/s1")).json()
    assert (img["status"], img["source_type"], img["source_id"]) == (
        "ready",
        "snapshot",
        snap["id"],
    )
    assert (await env.c.get("/volumes/d")).json()["status"] == "in_use"
    await env.ok(await env.c.post("/volumes/d/detach"))
    await env.ok(await env.capture("from-vol", volume="d"))
    img = (await env.c.get("/images/from-vol")).json()
    assert (img["status"], img["source_type"]) == ("ready", "volume")
    assert (await env.c.get("/volumes/d")).json()["status"] == "available"


@pytest.mark.parametrize("where", ["engine-before", "engine-after", "agent"])
async def test_a_failed_capture_leaves_no_image_file_or_quota(env: Env, where: str) -> None:
    body = {"name": "d", "size_gb": 1, "pool": "loc"}
    await env.ok(await env.c.post("/volumes", json=body))
    await env.ok(await env.c.post("/volumes/d/attach", json={"vm": "src"}))
    before = (await env.names("images"), await env.quota(), env.store_files())
    if where == "agent":
        env.runtime.faults.fail_next("agent.image.capture")
    else:
        env.stack.server.services.engine.faults.inject("image.capture", "capture", where[7:])  # type: ignore[arg-type]
    op = await env.failed(await env.capture("bad", volume="d"))
    assert op["error"]["code"] in ("injected_fault", "internal", "storage_error"), op
    assert (await env.names("images"), await env.quota(), env.store_files()) == before
    assert (await env.c.get("/volumes/d")).json()["status"] == "in_use"
    await env.ok(await env.capture("good", volume="d"))  # nothing stuck


async def test_full_clones_share_one_base_and_outlive_their_source(env: Env) -> None:
    src = (await env.c.get("/vms/src")).json()
    q0 = await env.quota()
    op = await env.ok(await env.c.post("/vms/src/clone", json={"name": "web", "count": 3}))
    assert (op["type"], op["target_id"]) == ("vm.clone", src["id"])
    clones = [(await env.c.get(f"/vms/web-{i}")).json() for i in (1, 2, 3)]
    base = (await env.c.get("/images/web-base")).json()
    assert (base["source_type"], base["source_id"]) == ("vm", src["id"])
    for vm in clones:
        assert vm["status"] == "running" and vm["image_id"] == base["id"]
        assert (vm["cpus"], vm["memory_mb"], vm["disk_gb"]) == (
            src["cpus"],
            src["memory_mb"],
            src["disk_gb"],
        )
        assert vm["id"] != src["id"]
    assert await env.quota() == {**q0, "vms": q0["vms"] + 3, "images": q0["images"] + 1,
                                 "vcpus": q0["vcpus"] + 3 * src["cpus"],
                                 "memory_mb": q0["memory_mb"] + 3 * src["memory_mb"]}  # fmt: skip
    # the base is in use while clones exist; the source can go
    refused(await env.c.delete("/images/web-base"), 409, "in_use")
    await env.ok(await env.c.post("/vms/src/clone", json={"name": "single", "start": False}))
    assert (await env.c.get("/vms/single")).json()["status"] == "stopped"


async def test_a_full_clone_is_made_before_its_base_is_published(env: Env) -> None:
    src = (await env.c.get("/vms/src")).json()
    gate = Gate(env.runtime)  # the base's upload waits until the gate opens
    try:
        await env.ok(await env.c.post("/vms/src/clone", json={"name": "pub", "count": 2}))
        base = (await env.c.get("/images/pub-base")).json()
        assert (base["status"], base["host_id"], base["parent_id"], base["sha256"]) == (
            "ready",
            src["host_id"],
            None,
            None,
        )
        for name in ("pub-1", "pub-2"):
            vm = (await env.c.get(f"/vms/{name}")).json()
            assert (vm["status"], vm["host_id"], vm["image_id"]) == (
                "running",
                src["host_id"],
                base["id"],
            )
        assert env.runtime.volumes.fetches[base["id"]] == 0  # type: ignore[attr-defined]
        assert (await env.publish_op(base["id"]))["status"] in ("queued", "running")
        r = await env.c.get(f"/images/{base['id']}/data")
        refused(r, 409, "invalid_state", reason="unpublished")
        body = {"name": "v", "size_gb": 1, "pool": "loc", "image": base["id"]}
        refused(await env.c.post("/volumes", json=body), 422, "invalid_input")
        assert f"{base['id']}.img" not in env.store_files()
    finally:
        gate.open()
    op = await env.published(base["id"])
    assert op["status"] == "succeeded", op
    base = (await env.c.get("/images/pub-base")).json()
    assert (base["status"], base["host_id"], base["error"]) == ("ready", None, None)
    cached = env.runtime.volumes.image_cache / f"{base['id']}.img"  # type: ignore[attr-defined]
    data = env.stored(base["id"]).read_bytes()
    assert data == cached.read_bytes() == f"simulated disk of {src['id']}\n".encode()
    assert (base["sha256"], base["size_bytes"]) == (hashlib.sha256(data).hexdigest(), len(data))
    r = await env.c.get(f"/images/{base['id']}/data")
    assert (r.status_code, r.content) == (200, data)
    await env.ok(await env.c.post("/volumes", json=body))  # copyable now


async def test_a_failed_publish_leaves_the_base_on_its_host_and_the_clones_fine(
    env: Env,
) -> None:
    src = (await env.c.get("/vms/src")).json()
    env.runtime.faults.fail_next("agent.image.publish", times=FORWARD_ATTEMPTS)
    await env.ok(await env.c.post("/vms/src/clone", json={"name": "nopub"}))
    base = (await env.c.get("/images/nopub-base")).json()
    op = await env.published(base["id"])
    assert op["status"] == "failed" and op["error"]["code"] == "injected_fault", op
    base = (await env.c.get("/images/nopub-base")).json()
    assert (base["status"], base["host_id"], base["sha256"]) == ("ready", src["host_id"], None)
    assert base["error"].startswith("publish failed: injected failure of agent.image.publish")
    assert not env.stored(base["id"]).exists()
    assert not [n for n in env.store_files() if n.endswith(".part")]
    vm = (await env.c.get("/vms/nopub")).json()
    assert (vm["status"], vm["image_id"]) == ("running", base["id"])
    # still an image on its host: a new VM from it goes there
    body = {"name": "from-nopub", "image": "nopub-base", "cpus": 1, "memory_mb": 64}
    await env.ok(await env.c.post("/vms", json=body))
    assert (await env.c.get("/vms/from-nopub")).json()["host_id"] == src["host_id"]


async def test_a_base_deleted_while_it_is_published_leaves_no_file(env: Env) -> None:
    gate = Gate(env.runtime)
    try:
        body = {"name": "gone", "start": False}
        await env.ok(await env.c.post("/vms/src/clone", json=body))
        base = (await env.c.get("/images/gone-base")).json()
        await env.ok(await env.c.delete("/vms/gone", params={"expunge": True}))
        r = await env.c.delete(f"/images/{base['id']}", params={"expunge": True})
        assert r.status_code == 202, r.text
    finally:
        gate.open()
    op = await env.published(base["id"])
    assert op["status"] == "succeeded", op
    refused(await env.c.get(f"/images/{base['id']}"), 404, "not_found")
    assert not [n for n in env.store_files() if n.startswith(base["id"]) or ".part" in n]


async def test_clone_requests_that_cannot_succeed_are_refused_upfront(env: Env) -> None:
    before = (await env.names("images"), await env.names("vms"), await env.quota())
    refused(await env.c.post("/vms/src/clone", json={"name": "src"}), 409, "name_taken")
    await env.ok(await env.c.post("/vms/src/clone", json={"name": "multi-2", "start": False}))
    before = (before[0] | {"multi-2-base"}, before[1] | {"multi-2"}, await env.quota())
    r = await env.c.post("/vms/src/clone", json={"name": "multi", "count": 3})
    refused(r, 409, "name_taken", name="multi-2")
    refused(
        await env.c.post("/vms/src/clone", json={"name": "x" * 62, "count": 10}),
        422,
        "invalid_input",
    )
    refused(
        await env.c.post("/vms/src/clone", json={"name": "c", "mode": "bogus"}),
        422,
        "invalid_input",
    )
    refused(
        await env.c.post("/vms/src/clone", json={"name": "c", "count": 51}), 422, "invalid_input"
    )
    refused(await env.c.post("/vms/nope/clone", json={"name": "c"}), 404, "not_found")
    assert (await env.names("images"), await env.names("vms"), await env.quota()) == before


@pytest.mark.parametrize("step", ["base", "launch"])
async def test_a_clone_failing_before_its_vms_exist_leaves_nothing(env: Env, step: str) -> None:
    before = (
        await env.names("images"),
        await env.names("vms"),
        await env.quota(),
        env.store_files(),
    )
    env.stack.server.services.engine.faults.inject("vm.clone", step, "before")
    await env.failed(await env.c.post("/vms/src/clone", json={"name": "f", "count": 2}))
    assert (
        await env.names("images"),
        await env.names("vms"),
        await env.quota(),
        env.store_files(),
    ) == before


async def test_a_clone_that_cannot_be_placed_leaves_nothing(env: Env) -> None:
    before = (
        await env.names("images"),
        await env.names("vms"),
        await env.quota(),
        env.store_files(),
    )
    total = (await env.c.get("/hosts")).json()["items"][0]["capacity"]["memory_mb_total"]
    q = {"q": "type=image.publish", "limit": 500}
    publications = len((await env.c.get("/operations", params=q)).json()["items"])
    # the source fits but 50 clones of it do not fit the one host
    await env.ok(await env.c.post("/vms/src/resize", json={"memory_mb": max(64, total // 10)}))
    try:
        op = await env.failed(await env.c.post("/vms/src/clone", json={"name": "big", "count": 50}))
        assert op["error"]["code"] in ("no_host_available", "quota_exceeded"), op
    finally:
        await env.ok(await env.c.post("/vms/src/resize", json={"memory_mb": 128}))
    if op["error"]["code"] == "no_host_available":  # not on the source's host: published first
        ops = (await env.c.get("/operations", params=q)).json()["items"]
        assert len(ops) == publications + 1 and ops[0]["status"] == "succeeded", ops
    after = (
        await env.names("images"),
        await env.names("vms"),
        await env.quota(),
        env.store_files(),
    )
    assert after == before


async def test_clones_that_do_not_fit_on_the_source_host_go_elsewhere_once_published(
    tmp_path: Path,
) -> None:
    overrides = {"sim_fetch_images": True, "sim_memory_mb": 1024}
    async with (
        running_stack(tmp_path, sim_hosts=2, agent_overrides=overrides) as stack,
        api_client(stack) as c,
    ):
        e = Env(stack, c, next(iter(stack.agent.runtimes.values())))
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        total = (await c.get("/hosts")).json()["items"][0]["capacity"]["memory_mb_total"]
        body = {"name": "big", "image": "tiny", "cpus": 1, "memory_mb": total // 3 + 1,
                "start": False}  # fmt: skip
        await e.ok(await c.post("/vms", json=body))  # 1 + 3 do not fit one host, 3 do
        src = (await c.get("/vms/big")).json()
        await e.ok(await c.post("/vms/big/clone", json={"name": "far", "count": 3}))
        base = (await c.get("/images/far-base")).json()
        assert (base["host_id"], base["error"]) == (None, None) and base["sha256"]
        assert (await e.publish_op(base["id"]))["status"] == "succeeded"  # waited for
        hosts = [(await c.get(f"/vms/far-{i}")).json()["host_id"] for i in (1, 2, 3)]
        assert src["host_id"] in hosts and len(set(hosts)) == 2, hosts
        names = {h["id"]: h["name"] for h in (await c.get("/hosts")).json()["items"]}
        fetches = {
            r.name: r.volumes.fetches[base["id"]]  # type: ignore[attr-defined]
            for r in stack.agent.runtimes.values()
        }
        assert fetches == {n: 0 if i == src["host_id"] else 1 for i, n in names.items()}


async def test_a_failed_clone_creation_keeps_the_others_and_their_base(env: Env) -> None:
    env.stack.server.services.engine.faults.inject("vm.create", "define", "before", times=1)
    op = await env.failed(await env.c.post("/vms/src/clone", json={"name": "p", "count": 3}))
    assert len(op["error"]["context"]["failed_vms"]) == 1
    made = {n for n in await env.names("vms") if n.startswith("p-")}
    assert len(made) == 2  # the failed one rolled back on its own
    assert "p-base" in await env.names("images")


@pytest.mark.parametrize("mode", ["linked", "instant"])
async def test_linked_and_instant_clones_share_a_frozen_layer_on_the_source_host(
    env: Env, mode: str
) -> None:
    src = (await env.c.get("/vms/src")).json()
    pool = env.runtime.volumes
    op = await env.ok(
        await env.c.post("/vms/src/clone", json={"name": mode, "count": 2, "mode": mode})
    )
    assert op["type"] == "vm.clone"
    layer = (await env.c.get(f"/images/{mode}-base")).json()
    assert (layer["status"], layer["host_id"], layer["parent_id"]) == (
        "ready",
        src["host_id"],
        src["image_id"],
    )
    assert pool.layers[src["id"]][-1] == layer["id"]  # type: ignore[attr-defined]
    assert (await env.c.get("/vms/src")).json()["image_id"] == layer["id"]  # on the layer now
    for i in (1, 2):
        vm = (await env.c.get(f"/vms/{mode}-{i}")).json()
        assert (vm["status"], vm["host_id"]) == ("running", src["host_id"])
        if mode == "linked":
            assert vm["image_id"] == layer["id"]
        else:  # flattened live: depends on no image
            assert vm["image_id"] is None
            assert vm["id"] in env.runtime.compute.flattened_roots  # type: ignore[attr-defined]
    # a layer is not in the image store and cannot be copied into a volume
    refused(await env.c.get(f"/images/{layer['id']}/data"), 409, "invalid_state")
    body = {"name": "v", "size_gb": 1, "pool": "loc", "image": layer["id"]}
    refused(await env.c.post("/volumes", json=body), 422, "invalid_input")
    # the source's former image cannot go while the layer is on it
    refused(await env.c.delete(f"/images/{src['image_id']}"), 409, "in_use")


async def test_linked_clones_must_stay_with_their_source(env: Env) -> None:
    before = (await env.names("images"), await env.names("vms"), await env.quota())
    other = next(h for h in (await env.c.get("/hosts")).json()["items"])
    assert other["id"] == (await env.c.get("/vms/src")).json()["host_id"]  # one host here
    r = await env.c.post("/vms/src/clone", json={"name": "l", "mode": "linked", "host": "nope"})
    refused(r, 404, "not_found")
    assert (await env.names("images"), await env.names("vms"), await env.quota()) == before


@pytest.mark.parametrize("where", ["engine-after", "agent", "launch"])
async def test_a_failed_linked_clone_thaws_the_source(env: Env, where: str) -> None:
    src = (await env.c.get("/vms/src")).json()
    before = (await env.names("images"), await env.names("vms"), await env.quota())
    layers = env.runtime.volumes.layers  # type: ignore[attr-defined]
    layers_before = {k: list(v) for k, v in layers.items()}
    faults = env.stack.server.services.engine.faults
    if where == "agent":
        env.runtime.faults.fail_next("agent.disk.freeze")
    elif where == "launch":
        faults.inject("vm.clone", "launch", "before")
    else:
        faults.inject("vm.clone", "base", "after")
    await env.failed(await env.c.post("/vms/src/clone", json={"name": "t", "mode": "linked"}))
    assert (await env.names("images"), await env.names("vms"), await env.quota()) == before
    assert (await env.c.get("/vms/src")).json()["image_id"] == src["image_id"]
    assert {k: v for k, v in layers.items() if v} == {k: v for k, v in layers_before.items() if v}
