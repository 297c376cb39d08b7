"""Root volumes and whole-VM snapshots through REST on a whole stack (server + libvirt agent) with a
real TCG guest (``$CORRAL_TEST_IMAGE``): a VM whose root disk is a volume on a local pool (no
host-local disk), markers written on its root and data volume, a whole-VM snapshot with memory,
the markers overwritten, a revert that resumes the guest from its memory with the old markers;
then a disk-only snapshot of the running guest, a revert of the stopped VM after a new boot,
both snapshots deleted by merging while the guest runs, and the VM deleted with its root
volume."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.libvirt.libvirt_itest import remove_domain
from tests.integration.libvirt.test_libvirt_volumes import Guest
from tests.integration.libvirt.test_stack_clone import ROOT_SECTOR, has_vdb
from tests.integration.libvirt.test_stack_volumes import finished
from tests.support.stack import api_client, pool_reached, running_stack, upload_image

pytestmark = pytest.mark.libvirt

DATA_SECTOR = 2048


async def write(guest: Guest, marker: str) -> None:
    """``marker`` on the root disk (past the image's partitions) and on the data volume."""
    for dev, sector in (("vda", ROOT_SECTOR), ("vdb", DATA_SECTOR)):
        script = f"printf '%s' '{marker}' | dd of=/dev/{dev} bs=512 seek={sector}"
        await asyncio.to_thread(guest.sh, f"{script} conv=fsync 2>/dev/null && sync")


async def read(guest: Guest, n: int) -> tuple[str, str]:
    """The first ``n`` bytes at the marker places of the root disk and of the data volume,
    read past the guest's page cache."""
    got = []
    for dev, sector in (("vda", ROOT_SECTOR), ("vdb", DATA_SECTOR)):
        cmd = f"dd if=/dev/{dev} bs=512 skip={sector} count=1 iflag=direct 2>/dev/null"
        got.append(await asyncio.to_thread(guest.sh, f"{cmd} | head -c {n}"))
    return got[0], got[1]


async def test_whole_vm_snapshots_of_a_vm_on_a_root_volume(
    workdir: Path, test_image: Path, system_conn: Any
) -> None:
    started = time.monotonic()
    vm_id = ""
    try:
        async with running_stack(workdir, driver="libvirt") as stack, api_client(stack) as c:
            await upload_image(c, "tiny", test_image)
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            pool_dir = workdir / "pool-loc"
            body: dict[str, Any] = {"name": "loc", "type": "local",
                    "settings": {"path": str(pool_dir)}, "clusters": [cluster]}  # fmt: skip
            await finished(c, await c.post("/storage-pools", json=body))
            await pool_reached(c, "loc", 1)
            runtime = next(iter(stack.agent.runtimes.values()))
            vm_body = {"name": "rv", "image": "tiny", "cpus": 1, "memory_mb": 256,
                       "root_pool": "loc", "volumes": [{"size_gb": 1, "pool": "loc"}]}  # fmt: skip
            await finished(c, await c.post("/vms", json=vm_body), timeout=180)
            vm = (await c.get("/vms/rv")).json()
            vm_id = vm["id"]
            root = (await c.get(f"/volumes/{vm['root_volume_id']}")).json()
            assert root["role"] == "root" and root["attachments"][0]["device"] == "vda"
            assert not (runtime.data_dir / "pool" / "vms" / vm_id / "root.qcow2").exists()
            assert any(pool_dir.rglob(f"vol-{root['id']}*"))

            async def guest() -> Guest:
                dom = await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm_id}")
                g = Guest(dom)
                await asyncio.to_thread(g.wait_for_agent, 90)
                return g

            g = await guest()
            await has_vdb(g)
            a, b = "corral-marker-a", "corral-marker-b"
            await write(g, a)
            body = {"name": "s1", "memory": True}
            await finished(c, await c.post("/vms/rv/snapshots", json=body), timeout=180)
            s1 = (await c.get("/vms/rv/snapshots/s1")).json()
            assert (s1["status"], s1["memory"], len(s1["snapshots"])) == ("ready", True, 2)
            assert (runtime.data_dir / "memory" / f"{s1['id']}.mem").stat().st_size > 0
            await write(g, b)
            assert await read(g, len(b)) == (b, b)

            await finished(c, await c.post("/vms/rv/stop", json={"force": True}))
            await finished(c, await c.post("/vms/rv/snapshots/s1/revert"), timeout=180)
            vm = (await c.get("/vms/rv")).json()
            assert vm["power_state"] == "running"  # resumed from the memory state
            g = await guest()
            assert await read(g, len(a)) == (a, a)

            # a disk-only snapshot of the running guest, reverted after a stop
            d, e = "corral-marker-d", "corral-marker-e"
            await write(g, d)
            await finished(c, await c.post("/vms/rv/snapshots", json={"name": "s2"}), timeout=180)
            await write(g, e)
            await finished(c, await c.post("/vms/rv/stop", json={"force": True}))
            await finished(c, await c.post("/vms/rv/snapshots/s2/revert"), timeout=180)
            assert (await c.get("/vms/rv")).json()["power_state"] == "stopped"
            await finished(c, await c.post("/vms/rv/start"), timeout=120)
            g = await guest()
            await has_vdb(g)
            assert await read(g, len(d)) == (d, d)

            # both deleted by merging while the guest runs; the data stays
            for name in ("s1", "s2"):
                await finished(c, await c.delete(f"/vms/rv/snapshots/{name}"), timeout=180)
            assert (await c.get("/vms/rv/snapshots")).json()["items"] == []
            assert not (runtime.data_dir / "memory" / f"{s1['id']}.mem").exists()
            assert await read(g, len(d)) == (d, d)

            await finished(c, await c.delete("/vms/rv"), timeout=180)
            assert not any(pool_dir.rglob(f"vol-{root['id']}*"))
            print(f"\nstack vm snapshot: {time.monotonic() - started:.1f} s in all")
    finally:
        if vm_id:
            remove_domain(system_conn, f"corral-{vm_id}")
