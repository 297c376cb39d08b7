"""Full clones and captured images through REST on a whole stack (server + libvirt agent) with
real TCG guests (``$CORRAL_TEST_IMAGE``): a marker written on the source's root disk and on one
of its data volumes is read back inside a full clone of the running source (its disk copied
live), two full clones of the stopped source booted from the captured base, in a
volume made of the captured data volume, in a linked clone (an overlay on the source's frozen
layer) and in an instant clone (its disk pulled live into a standalone file); the full clones
are overlays on one cached base on the host, which reaches the image store after them
(``image.publish``: the stored file is the cached one, byte for byte), and the clones outlive
their source."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.libvirt.libvirt_itest import remove_domain
from tests.integration.libvirt.test_libvirt_volumes import Guest, until
from tests.integration.libvirt.test_stack_volumes import finished
from tests.support.stack import api_client, running_stack, upload_image

pytestmark = pytest.mark.libvirt

ROOT_SECTOR = 1 << 20
"""Where the root-disk marker goes: 512 MiB into the 1 GiB disk, past the image's partitions."""
DATA_SECTOR = 2048


def backing_of(path: Path) -> str | None:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    backing: str | None = json.loads(out).get("full-backing-filename")
    return backing


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def published(c: httpx.AsyncClient, image_id: str, timeout: float = 120) -> dict[str, Any]:
    """The image once its ``image.publish`` is done: in the store (``host_id`` None, its
    ``sha256`` set); fails on a publish error."""
    image: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal image
        image = (await c.get(f"/images/{image_id}")).json()
        assert image["error"] is None, image
        return image["host_id"] is None and image["sha256"] is not None

    await until(done, f"image {image_id} to be published", timeout=timeout)
    return image


async def has_vdb(guest: Guest) -> None:
    """Wait until the guest has the hot-plugged vdb (a write to /dev/vdb before that would
    create a plain file)."""

    async def present() -> bool:
        script = "[ -b /dev/vdb ] && cat /sys/block/vdb/size || echo 0"
        return int(await asyncio.to_thread(guest.sh, script)) > 0

    await until(present, "the guest to see vdb", timeout=30)


async def test_full_clones_and_captured_volumes_keep_the_sources_data(
    workdir: Path, test_image: Path, system_conn: Any
) -> None:
    started = time.monotonic()
    vm_ids: list[str] = []
    try:
        async with running_stack(workdir, driver="libvirt") as stack, api_client(stack) as c:
            await upload_image(c, "tiny", test_image)
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            body: dict[str, Any] = {"name": "loc", "type": "local",
                    "settings": {"path": str(workdir / "pool-loc")}, "clusters": [cluster]}  # fmt: skip
            await finished(c, await c.post("/storage-pools", json=body))
            runtime = next(iter(stack.agent.runtimes.values()))

            async def boot(name: str) -> Guest:
                vm = (await c.get(f"/vms/{name}")).json()
                vm_ids.append(vm["id"])
                dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm['id']}")
                guest = Guest(dom)
                await asyncio.to_thread(guest.wait_for_agent, 90)
                return guest

            vm_body = {"name": "src", "image": "tiny", "cpus": 1, "memory_mb": 256}
            await finished(c, await c.post("/vms", json=vm_body), timeout=180)
            src = await boot("src")
            vol_body = {"name": "data", "size_gb": 1, "pool": "loc", "vm": "src"}
            await finished(c, await c.post("/volumes", json=vol_body))
            await has_vdb(src)
            root_marker, data_marker = "corral-root-marker", "corral-data-marker"
            for dev, sector, marker in (("vda", ROOT_SECTOR, root_marker),
                                        ("vdb", DATA_SECTOR, data_marker)):  # fmt: skip
                script = f"printf '%s' '{marker}' | dd of=/dev/{dev} bs=512 seek={sector}"
                await asyncio.to_thread(src.sh, f"{script} conv=fsync 2>/dev/null && sync")
            # A full clone of the running source: its disk copied live (block copy).
            body = {"name": "hot", "mode": "full"}
            await finished(c, await c.post("/vms/src/clone", json=body), timeout=300)
            assert (await c.get("/vms/src")).json()["status"] == "running"  # never stopped
            hot = await boot("hot")
            read = f"dd if=/dev/vda bs=512 skip={ROOT_SECTOR} count=1 2>/dev/null"
            got = await asyncio.to_thread(hot.sh, f"{read} | head -c {len(root_marker)}")
            assert got == root_marker
            await finished(c, await c.delete("/vms/hot"), timeout=180)
            await finished(c, await c.delete("/images/hot-base"))

            await finished(c, await c.post("/vms/src/stop", json={"force": True}))

            # Two clones from one capture; they boot and see the source's root disk.
            op = await finished(
                c, await c.post("/vms/src/clone", json={"name": "cl", "count": 2}), timeout=300
            )
            assert op["type"] == "vm.clone"
            base = (await c.get("/images/cl-base")).json()
            assert (base["status"], base["format"], base["source_type"]) == ("ready", "qcow2", "vm")
            cached = runtime.data_dir / "pool" / "images" / f"{base['id']}.qcow2"
            assert cached.is_file()  # kept by the capture: the clones fetched nothing
            # the base was sent to the image store after the clones were made (image.publish)
            base = await published(c, base["id"])
            stored = stack.server.services.settings.image_dir / f"{base['id']}.img"
            digest = await asyncio.to_thread(sha256_of, stored)
            assert digest == base["sha256"] == await asyncio.to_thread(sha256_of, cached)
            assert base["size_bytes"] == stored.stat().st_size == cached.stat().st_size
            for name in ("cl-1", "cl-2"):
                vm = (await c.get(f"/vms/{name}")).json()
                assert vm["status"] == "running" and vm["image_id"] == base["id"]
                disk = runtime.data_dir / "pool" / "vms" / vm["id"] / "root.qcow2"
                assert backing_of(disk) == str(cached)
                guest = await boot(name)
                read = f"dd if=/dev/vda bs=512 skip={ROOT_SECTOR} count=1 2>/dev/null"
                got = await asyncio.to_thread(guest.sh, f"{read} | head -c {len(root_marker)}")
                assert got == root_marker, name

            # The data volume captured, copied into a new volume, attached to a clone.
            await finished(c, await c.post("/volumes/data/detach"))
            body = {"name": "data-img", "source": {"volume": "data"}}
            await finished(c, await c.post("/images", json=body), timeout=180)
            body = {"name": "data2", "size_gb": 1, "pool": "loc", "image": "data-img", "vm": "cl-1"}
            await finished(c, await c.post("/volumes", json=body), timeout=180)
            cl1 = (await c.get("/vms/cl-1")).json()["id"]
            guest = Guest(await asyncio.to_thread(system_conn.lookupByName, f"corral-{cl1}"))
            await has_vdb(guest)
            read = f"dd if=/dev/vdb bs=512 skip={DATA_SECTOR} count=1 2>/dev/null"

            async def data_read() -> bool:
                got = await asyncio.to_thread(guest.sh, f"{read} | head -c {len(data_marker)}")
                return got == data_marker

            await until(data_read, "the clone to read the data marker on vdb", timeout=30)

            # A linked and an instant clone: overlays on a frozen layer of the source's disk.
            await finished(c, await c.post("/vms/src/clone", json={"name": "lk", "mode": "linked"}))
            layer = (await c.get("/images/lk-base")).json()
            layer_file = runtime.data_dir / "pool" / "images" / f"{layer['id']}.qcow2"
            src_vm = (await c.get("/vms/src")).json()
            src_disk = runtime.data_dir / "pool" / "vms" / src_vm["id"] / "root.qcow2"
            assert src_vm["image_id"] == layer["id"] and backing_of(src_disk) == str(layer_file)
            body = {"name": "inst", "mode": "instant"}
            await finished(c, await c.post("/vms/src/clone", json=body), timeout=300)
            for name in ("lk", "inst"):
                vm = (await c.get(f"/vms/{name}")).json()
                disk = runtime.data_dir / "pool" / "vms" / vm["id"] / "root.qcow2"
                if name == "lk":
                    assert vm["image_id"] == layer["id"]
                    assert backing_of(disk) == str(layer_file)
                else:  # pulled live into its own disk: standalone
                    assert vm["image_id"] is None and backing_of(disk) is None
                guest = await boot(name)
                read = f"dd if=/dev/vda bs=512 skip={ROOT_SECTOR} count=1 2>/dev/null"
                got = await asyncio.to_thread(guest.sh, f"{read} | head -c {len(root_marker)}")
                assert got == root_marker, name

            # The source goes; the clones stay, their base in use.
            await finished(c, await c.delete("/vms/src"), timeout=180)
            assert (await c.get("/vms/cl-2")).json()["status"] == "running"
            assert (await c.delete("/images/cl-base")).status_code == 409
            print(f"\nstack clone: {time.monotonic() - started:.1f} s in all")
    finally:
        for vm_id in vm_ids:
            remove_domain(system_conn, f"corral-{vm_id}")
