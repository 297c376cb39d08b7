"""Volumes on an iscsi pool through REST on a whole stack (server + libvirt agent) with a real TCG
guest (``$CORRAL_TEST_IMAGE``) and a tgtd target requiring CHAP, with LUNs of 1, 1 and 2 GiB:
the agent reports the LUNs, a volume gets the smallest free LUN that holds it, the guest sees the
whole LUN (QEMU's libiscsi logs in with CHAP), data survives a detach and a re-attach, a LUN
cannot grow, a deleted volume's LUN is zeroed and free again, and a volume no free LUN holds is
refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from tests.integration.identity.admin import refused
from tests.integration.libvirt.libvirt_itest import remove_domain
from tests.integration.libvirt.test_libvirt_volumes import Guest, disk_with_alias, until, xml_of
from tests.integration.libvirt.test_stack_volumes import finished
from tests.support.stack import api_client, running_stack, upload_image
from tests.support.storage import iscsi
from tests.support.storage.daemons import Unavailable

pytestmark = [pytest.mark.libvirt, pytest.mark.storage_servers]

GIB = 1 << 30
MIB = 1 << 20
CHAP = ("corral-stack", "Stack-Chap-Secret-9")
LUN_SIZES = (GIB, GIB, 2 * GIB)  # LUNs 1, 2 and 3
MARKER_SECTOR = 2048  # the marker's place on the volume (1 MiB in)


@pytest.fixture
def target() -> Iterator[iscsi.IscsiTarget]:
    """A tgtd target requiring CHAP with LUNs 1 (1 GiB), 2 (1 GiB) and 3 (2 GiB)."""
    try:
        iscsi.check_available()
    except Unavailable as exc:
        pytest.skip(str(exc))
    with iscsi.iscsi_target(LUN_SIZES, chap=CHAP) as t:
        yield t


async def luns(c: httpx.AsyncClient) -> dict[int, tuple[float, str | None]]:
    """``GET /storage-pools/san/luns``: {LUN: (size_gb, volume_id)}."""
    r = await c.get("/storage-pools/san/luns")
    assert r.status_code == 200, r.text
    return {x["lun"]: (x["size_gb"], x["volume_id"]) for x in r.json()}


def read_lun(target: iscsi.IscsiTarget, lun: int, offset: int, count: int) -> bytes:
    """Bytes of the LUN from its backing file on the target (behind QEMU's back)."""
    with target.luns[lun].open("rb") as f:
        f.seek(offset)
        return f.read(count)


def lun_is_zero(target: iscsi.IscsiTarget, lun: int) -> bool:
    """Whether the whole backing file of the LUN reads as zeros."""
    zero = bytes(16 * MIB)
    with target.luns[lun].open("rb") as f:
        while chunk := f.read(len(zero)):
            if chunk != zero[: len(chunk)]:
                return False
    return True


async def test_volumes_on_an_iscsi_pool_through_rest(
    workdir: Path, test_image: Path, system_conn: Any, target: iscsi.IscsiTarget
) -> None:
    started = time.monotonic()
    vm_id = ""
    pool_id = ""
    try:
        async with running_stack(workdir, driver="libvirt") as stack, api_client(stack) as c:
            await upload_image(c, "tiny", test_image)
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            body: dict[str, Any] = {
                "name": "san",
                "type": "iscsi",
                "settings": {"portal": target.portal, "iqn": target.iqn},
                "credentials": ":".join(CHAP),
                "clusters": [cluster],
            }
            op = await finished(c, await c.post("/storage-pools", json=body))
            pool_id = op["target_id"]
            pool = (await c.get("/storage-pools/san")).json()
            assert pool["has_credentials"] is True and "credentials" not in pool

            # The agent logs in with CHAP and reports the target's LUNs (not tgtd's LUN 0).
            async def reported() -> bool:
                return len(await luns(c)) == len(LUN_SIZES)

            await until(reported, "the agent to report the target's LUNs", timeout=60)
            assert await luns(c) == {1: (1.0, None), 2: (1.0, None), 3: (2.0, None)}
            hosts = (await c.get("/storage-pools/san/hosts")).json()
            assert [h["ok"] for h in hosts] == [True], hosts
            reported_at = time.monotonic()

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

            async def vdb_is(size: int) -> None:
                async def check() -> bool:
                    got = await sh("cat /sys/block/vdb/size 2>/dev/null || echo 0")
                    return int(got) * 512 == size

                await until(check, f"the guest to see vdb at {size} bytes", timeout=30)

            async def gone() -> bool:
                return await sh("[ -e /sys/block/vdb ] && echo yes || echo no") == "no"

            # 1 GiB: the smallest free LUN that holds it is LUN 1 (LUN 2 is as small: the lower).
            vol_body = {"name": "data1", "size_gb": 1, "pool": "san", "vm": "vm1"}
            op = await finished(c, await c.post("/volumes", json=vol_body))
            assert op["type"] == "volume.attach", op
            vol = (await c.get("/volumes/data1")).json()
            vid = vol["id"]
            assert (vol["format"], vol["status"], vol["instantiated"]) == ("raw", "in_use", True)
            assert vol["attachments"] == [{"vm_id": vm_id, "device": "vdb"}]
            assert await luns(c) == {1: (1.0, vid), 2: (1.0, None), 3: (2.0, None)}

            # QEMU reaches the LUN itself (a network disk), with CHAP through a libvirt secret.
            live = disk_with_alias(
                await asyncio.to_thread(xml_of, system_conn, vm_id, live=True), vid
            )
            assert live is not None and live.get("type") == "network"
            source = live.find("source")
            assert source is not None
            assert (source.get("protocol"), source.get("name")) == ("iscsi", f"{target.iqn}/1")
            auth = live.find("auth")
            assert auth is not None and auth.get("username") == CHAP[0]

            # The guest sees the whole LUN; write a marker at a sector, and one in the last one.
            await vdb_is(GIB)
            assert await sh("cat /sys/block/vdb/serial") == vid[:20]
            marker = f"corral-marker-{vid}"
            tail = f"corral-tail-{vid}"
            last = GIB // 512 - 1
            for text, sector in ((marker, MARKER_SECTOR), (tail, last)):
                seek = f"bs=512 seek={sector} conv=fsync"
                await sh(f"printf '%s' '{text}' | dd of=/dev/vdb {seek} 2>/dev/null && sync")

            # A LUN does not grow: 422 lun_size, nothing changes.
            r = await c.post(f"/volumes/{vid}/resize", json={"size_gb": 2})
            refused(r, 422, "invalid_input", reason="lun_size", lun_gb=1.0)
            assert (await c.get(f"/volumes/{vid}")).json()["size_gb"] == 1

            # Detach: the guest loses vdb and the data is on the target, in LUN 1's backing file.
            await finished(c, await c.post(f"/volumes/{vid}/detach"))
            vol = (await c.get(f"/volumes/{vid}")).json()
            assert (vol["status"], vol["attachments"]) == ("available", [])
            await until(gone, "the guest to lose vdb")
            on_target = await asyncio.to_thread(
                read_lun, target, 1, MARKER_SECTOR * 512, len(marker)
            )
            assert on_target == marker.encode()
            on_target = await asyncio.to_thread(read_lun, target, 1, last * 512, len(tail))
            assert on_target == tail.encode()

            # Attach again: the guest reads the marker back.
            await finished(c, await c.post(f"/volumes/{vid}/attach", json={"vm": "vm1"}))
            await vdb_is(GIB)
            assert await sh("cat /sys/block/vdb/serial") == vid[:20]
            skip = f"bs=512 skip={MARKER_SECTOR} count=1"
            read = await sh(f"dd if=/dev/vdb {skip} 2>/dev/null | head -c {len(marker)}")
            assert read == marker

            # Detach and delete: LUN 1 is zeroed (all of it) and free again.
            await finished(c, await c.post(f"/volumes/{vid}/detach"))
            await until(gone, "the guest to lose vdb again")
            deleting = time.monotonic()
            await finished(c, await c.delete(f"/volumes/{vid}"), timeout=300)
            deleted_in = time.monotonic() - deleting
            assert (await c.get(f"/volumes/{vid}")).status_code == 404
            assert await luns(c) == {1: (1.0, None), 2: (1.0, None), 3: (2.0, None)}
            assert await asyncio.to_thread(lun_is_zero, target, 1)
            assert target.luns[1].stat().st_size == GIB  # the LUN stays: the admin's

            # 2 GiB: only LUN 3 holds it; the guest sees 2 GiB.
            vol_body = {"name": "data2", "size_gb": 2, "pool": "san", "vm": "vm1"}
            await finished(c, await c.post("/volumes", json=vol_body))
            vid2 = (await c.get("/volumes/data2")).json()["id"]
            assert await luns(c) == {1: (1.0, None), 2: (1.0, None), 3: (2.0, vid2)}
            await vdb_is(2 * GIB)

            # Another 2 GiB: the pool has room (2 of 4 GiB allocated) but no free LUN holds it
            # (the free ones have 1 GiB each); nothing is recorded.
            r = await c.post("/volumes", json={"name": "data3", "size_gb": 2, "pool": "san"})
            refused(r, 409, "invalid_state", reason="no_free_lun", free_gb=[1.0, 1.0])
            assert (await c.get("/volumes/data3")).status_code == 404
            # 3 GiB: no LUN is that big (the LUNs decide, not the pool's summed capacity).
            r = await c.post("/volumes", json={"name": "data3", "size_gb": 3, "pool": "san"})
            refused(r, 409, "invalid_state", reason="no_free_lun", free_gb=[1.0, 1.0])
            assert (await c.get("/volumes/data3")).status_code == 404

            # Deleting the VM keeps its volume (detached); deleting that frees LUN 3.
            await finished(c, await c.delete("/vms/vm1"), timeout=180)
            vol = (await c.get(f"/volumes/{vid2}")).json()
            assert (vol["status"], vol["attachments"]) == ("available", [])
            await finished(c, await c.delete(f"/volumes/{vid2}"), timeout=300)
            assert all(v is None for _, v in (await luns(c)).values())
            print(
                f"\nstack iscsi: {time.monotonic() - started:.1f} s in all, LUNs reported after "
                f"{reported_at - started:.1f} s, guest up after {booted - started:.1f} s, "
                f"1 GiB LUN zeroed in {deleted_in:.1f} s"
            )
    finally:
        if vm_id:
            remove_domain(system_conn, f"corral-{vm_id}")
        if pool_id:  # the CHAP secret the agent defined for the pool's disks
            try:
                usage = f"corral-pool-{pool_id}"
                system_conn.secretLookupByUsage(
                    libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage
                ).undefine()
            except libvirt.libvirtError:
                pass
