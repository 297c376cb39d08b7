"""Data volumes through REST on a whole stack (server + libvirt agent) with a real TCG guest
(``$CORRAL_TEST_IMAGE``) and a local pool: create-and-attach, what the guest sees, detach and
re-attach keeping the data, online grow, a VM's delete keeping its volume, the volume's delete.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.libvirt.libvirt_itest import remove_domain
from tests.integration.libvirt.test_libvirt_volumes import Guest, until
from tests.support.stack import api_client, running_stack, upload_image, wait_op

pytestmark = pytest.mark.libvirt

GIB = 1 << 30
MARKER_SECTOR = 2048  # the marker's place on the volume (1 MiB in)


async def finished(c: httpx.AsyncClient, r: httpx.Response, timeout: float = 120) -> dict[str, Any]:
    """The operation of an accepted mutation, once it succeeded."""
    assert r.status_code == 202, r.text
    op = await wait_op(c, r.json(), timeout=timeout)
    assert op["status"] == "succeeded", op
    return op


async def test_volume_on_a_local_pool_through_rest(
    workdir: Path, test_image: Path, system_conn: Any
) -> None:
    started = time.monotonic()
    vm_id = ""
    try:
        async with running_stack(workdir, driver="libvirt") as stack, api_client(stack) as c:
            await upload_image(c, "tiny", test_image)
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            pool_dir = workdir / "pool-loc"
            body: dict[str, Any] = {"name": "loc", "type": "local", "settings": {"path": str(pool_dir)},
                    "clusters": [cluster]}  # fmt: skip
            await finished(c, await c.post("/storage-pools", json=body))

            vm_body = {"name": "vm1", "image": "tiny", "cpus": 1, "memory_mb": 256, "start": True}
            r = await c.post("/vms", json=vm_body)
            vm_id = r.json()["target_id"]
            await finished(c, r, timeout=180)  # the agent probes KVM at its first define
            dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm_id}")
            guest = Guest(dom)
            await asyncio.to_thread(guest.wait_for_agent, 90)
            booted = time.monotonic()

            async def sh(script: str) -> str:
                return await asyncio.to_thread(guest.sh, script)

            async def vdb_size() -> int:
                return int(await sh("cat /sys/block/vdb/size 2>/dev/null || echo 0")) * 512

            async def vdb_is(size: int) -> None:
                async def check() -> bool:
                    return await vdb_size() == size

                await until(check, f"the guest to see vdb at {size} bytes", timeout=30)

            # Create and attach in one request: made on the pool, hot-plugged as vdb.
            vol_body = {"name": "data1", "size_gb": 1, "pool": "loc", "vm": "vm1"}
            op = await finished(c, await c.post("/volumes", json=vol_body))
            assert op["type"] == "volume.attach", op
            vol = (await c.get("/volumes/data1")).json()
            vid = vol["id"]
            vm = (await c.get("/vms/vm1")).json()
            assert (vol["status"], vol["instantiated"]) == ("in_use", True)
            assert vol["host_id"] == vm["host_id"]
            assert vol["attachments"] == [{"vm_id": vm_id, "device": "vdb"}]
            path = pool_dir / "volumes" / f"vol-{vid}.qcow2"
            assert path.is_file()
            await vdb_is(GIB)
            assert await sh("cat /sys/block/vdb/serial") == vid[:20]

            marker = f"corral-marker-{vid}"
            seek = f"bs=512 seek={MARKER_SECTOR} conv=fsync"
            await sh(f"printf '%s' '{marker}' | dd of=/dev/vdb {seek} 2>/dev/null && sync")

            # Detach, attach again: the marker is still there.
            await finished(c, await c.post(f"/volumes/{vid}/detach"))
            vol = (await c.get(f"/volumes/{vid}")).json()
            assert (vol["status"], vol["attachments"]) == ("available", [])

            async def gone() -> bool:
                return await sh("[ -e /sys/block/vdb ] && echo yes || echo no") == "no"

            await until(gone, "the guest to lose vdb")
            await finished(c, await c.post(f"/volumes/{vid}/attach", json={"vm": "vm1"}))
            vol = (await c.get(f"/volumes/{vid}")).json()
            assert vol["status"] == "in_use" and len(vol["attachments"]) == 1
            await vdb_is(GIB)
            assert await sh("cat /sys/block/vdb/serial") == vid[:20]
            skip = f"bs=512 skip={MARKER_SECTOR} count=1"
            read = await sh(f"dd if=/dev/vdb {skip} 2>/dev/null | head -c {len(marker)}")
            assert read == marker

            # Online grow.
            await finished(c, await c.post(f"/volumes/{vid}/resize", json={"size_gb": 2}))
            await vdb_is(2 * GIB)
            assert (await c.get(f"/volumes/{vid}")).json()["size_gb"] == 2
            assert await asyncio.to_thread(virtual_size, path) == 2 * GIB

            # Deleting the VM keeps the volume (detached, on the pool, with its data).
            await finished(c, await c.delete("/vms/vm1"), timeout=180)
            vol = (await c.get(f"/volumes/{vid}")).json()
            assert (vol["status"], vol["attachments"]) == ("available", [])
            assert path.is_file()

            # Deleting the volume removes its file.
            await finished(c, await c.delete(f"/volumes/{vid}"))
            assert (await c.get(f"/volumes/{vid}")).status_code == 404
            assert not path.exists()
            print(
                f"\nstack volumes: {time.monotonic() - started:.1f} s in all, "
                f"guest up after {booted - started:.1f} s"
            )
    finally:
        if vm_id:
            remove_domain(system_conn, f"corral-{vm_id}")


def virtual_size(path: Path) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(json.loads(out)["virtual-size"])
