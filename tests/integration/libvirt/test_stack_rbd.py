"""Volumes on an rbd pool through REST on a whole stack (server + libvirt agent) with a real TCG
guest (``$CORRAL_TEST_IMAGE``) and the session's single-node Ceph cluster: a volume hot-plugged
into the guest, two live snapshots that are Ceph's own (``snap-<id>`` on the volume's image, no
overlay), a revert of the stopped VM's volume the guest reads back, a volume made from a snapshot
that is a Ceph copy-on-write clone (the guest reads the snapshot's data on it; the snapshot is
kept while the clone exists), and a volume from an image that is a clone of
``corral-image-<id>@base``. Nothing of the test is left in the Ceph pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.server.db.tables import VolumeRow
from corral.up import Stack
from tests.integration.identity.admin import refused
from tests.integration.libvirt.libvirt_itest import remove_domain
from tests.integration.libvirt.test_libvirt_volumes import Guest, disk_with_alias, until, xml_of
from tests.integration.libvirt.test_stack_volumes import finished
from tests.support.stack import api_client, running_stack, upload_image
from tests.support.storage.ceph import CephCluster
from tests.support.storage.daemons import ServerError
from tests.support.storage.fixtures import ceph_cluster as ceph_cluster

pytestmark = [pytest.mark.libvirt, pytest.mark.storage_servers]

GIB = 1 << 30
MIB = 1 << 20
MARKER_SECTOR = 2048  # the markers' place on the volume (1 MiB in)


def rbd_images(ceph: CephCluster) -> set[str]:
    return set(ceph.rbd("ls", ceph.pool).split())


def rbd_snaps(ceph: CephCluster, image: str) -> dict[str, bool]:
    """The image's snapshots as {name: protected}."""
    out = ceph.rbd("snap", "ls", "--format", "json", f"{ceph.pool}/{image}")
    return {s["name"]: str(s.get("protected")).lower() == "true" for s in json.loads(out)}


def rbd_info(ceph: CephCluster, image: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(ceph.rbd("info", "--format", "json", f"{ceph.pool}/{image}"))
    return info


def remove_images(ceph: CephCluster, names: set[str]) -> set[str]:
    """Remove the images ``names`` with their snapshots (clones before their parents: a few
    rounds); the names that could not be removed."""
    left = set(names)
    for _ in range(len(names) + 1):
        for name in sorted(left):
            spec = f"{ceph.pool}/{name}"
            try:
                for snap, protected in rbd_snaps(ceph, name).items():
                    if protected:
                        ceph.rbd("snap", "unprotect", f"{spec}@{snap}")
                ceph.rbd("snap", "purge", "--no-progress", spec)
                ceph.rbd("rm", "--no-progress", spec)
            except ServerError:
                continue  # a parent of a clone not removed yet, or already gone
        left &= rbd_images(ceph)
        if not left:
            break
    return left


async def pool_name(stack: Stack, volume_id: str) -> str:
    """The volume's image on the pool (``VolumeRow.pool_name``: not in the REST model)."""
    async with stack.server.services.sessionmaker() as s:
        row = await s.get(VolumeRow, volume_id)
        assert row is not None
        return row.pool_name


def raw_head_sha(image: Path, workdir: Path) -> str:
    """SHA-256 of the first MiB of the image's content (the guest's view of a copy of it)."""
    raw = workdir / "image.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    with raw.open("rb") as f:
        return hashlib.sha256(f.read(MIB)).hexdigest()


async def test_rbd_volumes_snapshots_and_clones_through_rest(
    workdir: Path,
    test_image: Path,
    system_conn: Any,
    ceph_cluster: CephCluster,
) -> None:
    ceph = ceph_cluster
    started = time.monotonic()
    vm_id = ""
    pool_id = ""
    left: set[str] = set()
    before = await asyncio.to_thread(rbd_images, ceph)
    try:
        async with running_stack(workdir, driver="libvirt") as stack, api_client(stack) as c:
            image = await upload_image(c, "tiny", test_image)
            cluster = (await c.get("/clusters")).json()["items"][0]["name"]
            body: dict[str, Any] = {
                "name": "ceph",
                "type": "rbd",
                "settings": {"monitors": [ceph.mon_host], "pool": ceph.pool, "user": ceph.client},
                "credentials": ceph.key,
                "clusters": [cluster],
            }
            op = await finished(c, await c.post("/storage-pools", json=body))
            pool_id = op["target_id"]
            pool = (await c.get("/storage-pools/ceph")).json()
            assert pool["has_credentials"] is True and "credentials" not in pool

            hosts: list[dict[str, Any]] = []

            async def pool_ok() -> bool:
                nonlocal hosts
                hosts = (await c.get("/storage-pools/ceph/hosts")).json()
                return [h["ok"] for h in hosts] == [True]

            try:
                await until(pool_ok, "the host to report the rbd pool ok", timeout=60)
            except AssertionError:
                raise AssertionError(f"pool hosts: {hosts}") from None
            reported = time.monotonic()

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

            async def device_of(serial: str) -> str:
                """The guest's name of the disk with ``serial`` ("" if none): the tiny guest has
                no udev, its names follow the plug order."""
                return await sh(
                    "for d in /sys/block/vd*; do "
                    f'[ "$(cat $d/serial 2>/dev/null)" = "{serial}" ] && basename $d; done; true'
                )

            async def wait_device(volume_id: str, size: int) -> str:
                found = ""

                async def seen() -> bool:
                    nonlocal found
                    found = await device_of(volume_id[:20])
                    if not found:
                        return False
                    blocks = await sh(f"cat /sys/block/{found}/size 2>/dev/null || echo 0")
                    return int(blocks) * 512 == size

                await until(seen, f"the guest to see volume {volume_id} at {size} B", timeout=60)
                return found

            async def wait_gone(volume_id: str) -> None:
                async def gone() -> bool:
                    return await device_of(volume_id[:20]) == ""

                await until(gone, f"the guest to lose volume {volume_id}", timeout=30)

            async def write(dev: str, text: str) -> None:
                seek = f"bs=512 seek={MARKER_SECTOR} conv=fsync"
                await sh(f"printf '%s' '{text}' | dd of=/dev/{dev} {seek} 2>/dev/null && sync")

            async def read(dev: str, count: int) -> str:
                skip = f"bs=512 skip={MARKER_SECTOR} count=1"
                return await sh(f"dd if=/dev/{dev} {skip} 2>/dev/null | head -c {count}")

            async def snapshot_id(name: str) -> str:
                r = await c.get(f"/snapshots/{name}")
                assert r.status_code == 200, r.text
                return str(r.json()["id"])

            # 2. A 1 GiB volume, hot-plugged as vdb; markers A and B with a live snapshot after
            # each.
            vol_body = {"name": "data", "size_gb": 1, "pool": "ceph", "vm": "vm1"}
            op = await finished(c, await c.post("/volumes", json=vol_body))
            assert op["type"] == "volume.attach", op
            vol = (await c.get("/volumes/data")).json()
            vid = vol["id"]
            assert (vol["format"], vol["status"], vol["instantiated"]) == ("raw", "in_use", True)
            assert vol["attachments"] == [{"vm_id": vm_id, "device": "vdb"}]
            image_name = await pool_name(stack, vid)
            assert image_name in await asyncio.to_thread(rbd_images, ceph)
            live = disk_with_alias(
                await asyncio.to_thread(xml_of, system_conn, vm_id, live=True), vid
            )
            assert live is not None and live.get("type") == "network"
            source = live.find("source")
            assert source is not None
            assert (source.get("protocol"), source.get("name")) == (
                "rbd",
                f"{ceph.pool}/{image_name}",
            )
            assert await wait_device(vid, GIB) == "vdb"

            marker_a = f"corral-marker-A-{vid}"
            marker_b = f"corral-marker-B-{vid}"  # as long as A: it overwrites it whole
            await write("vdb", marker_a)
            assert await read("vdb", len(marker_a)) == marker_a
            await finished(c, await c.post("/volumes/data/snapshots", json={"name": "s1"}))
            await write("vdb", marker_b)
            assert await read("vdb", len(marker_b)) == marker_b
            await finished(c, await c.post("/volumes/data/snapshots", json={"name": "s2"}))
            s1, s2 = await snapshot_id("s1"), await snapshot_id("s2")

            # 3. Ceph's own snapshots on the volume's image; no overlay: the image stays the
            # volume's (in the record and in QEMU's disk).
            snaps = await asyncio.to_thread(rbd_snaps, ceph, image_name)
            assert set(snaps) == {f"snap-{s1}", f"snap-{s2}"}, snaps
            assert await pool_name(stack, vid) == image_name
            vol = (await c.get("/volumes/data")).json()
            assert (vol["status"], vol["format"]) == ("in_use", "raw")
            live = disk_with_alias(
                await asyncio.to_thread(xml_of, system_conn, vm_id, live=True), vid
            )
            assert live is not None
            source = live.find("source")
            assert source is not None and source.get("name") == f"{ceph.pool}/{image_name}"
            ours = await asyncio.to_thread(rbd_images, ceph) - before
            assert ours == {image_name}, ours
            items = (await c.get("/volumes/data/snapshots")).json()["items"]
            tree = {i["name"]: (i["parent_id"], i["current"]) for i in items}
            assert tree == {"s1": (None, False), "s2": (s1, True)}, tree

            # 4. Revert the stopped VM's volume to s1: the guest reads marker A again.
            refused(await c.post(f"/snapshots/{s1}/revert"), 409, "invalid_state")  # it runs
            await finished(c, await c.post("/vms/vm1/stop", json={"force": True}), timeout=120)
            await finished(c, await c.post(f"/snapshots/{s1}/revert"))
            assert await pool_name(stack, vid) == image_name
            snaps = await asyncio.to_thread(rbd_snaps, ceph, image_name)
            assert set(snaps) == {f"snap-{s1}", f"snap-{s2}"}, snaps
            await finished(c, await c.post("/vms/vm1/start"), timeout=120)
            await asyncio.to_thread(guest.wait_for_agent, 90)
            assert await wait_device(vid, GIB) == "vdb"
            assert await read("vdb", len(marker_a)) == marker_a
            reverted = time.monotonic()

            # 5. A volume from s2: a Ceph clone of the image's snap-<s2>, holding marker B.
            body = {"name": "copy", "size_gb": 2, "pool": "ceph", "snapshot": s2}
            op = await finished(c, await c.post("/volumes", json=body))
            assert op["type"] == "volume.clone", op
            copy = (await c.get("/volumes/copy")).json()
            cid = copy["id"]
            assert copy["parent_snapshot_id"] == s2
            assert (copy["status"], copy["instantiated"], copy["size_gb"]) == (
                "available",
                True,
                2,
            )
            copy_name = await pool_name(stack, cid)
            info = await asyncio.to_thread(rbd_info, ceph, copy_name)
            parent = info.get("parent", {})
            assert (parent.get("pool"), parent.get("image"), parent.get("snapshot")) == (
                ceph.pool,
                image_name,
                f"snap-{s2}",
            ), info
            assert info["size"] == 2 * GIB
            snaps = await asyncio.to_thread(rbd_snaps, ceph, image_name)
            assert snaps.get(f"snap-{s2}") is True, snaps  # protected for its clone

            await finished(c, await c.post("/volumes/copy/attach", json={"vm": "vm1"}))
            copy = (await c.get("/volumes/copy")).json()
            assert copy["attachments"] == [{"vm_id": vm_id, "device": "vdc"}]
            assert await wait_device(cid, 2 * GIB) == "vdc"
            assert await read("vdc", len(marker_b)) == marker_b
            assert await read("vdb", len(marker_a)) == marker_a  # the source still holds A

            # The snapshot is held by its clone (and the source volume by the snapshot's clone).
            refused(await c.delete(f"/snapshots/{s2}"), 409, "in_use", volumes=["copy"])
            await finished(c, await c.post("/volumes/copy/detach"))
            await wait_gone(cid)
            await finished(c, await c.delete("/volumes/copy"))
            assert (await c.get("/volumes/copy")).status_code == 404
            assert copy_name not in await asyncio.to_thread(rbd_images, ceph)
            await finished(c, await c.delete(f"/snapshots/{s2}"))
            assert (await c.get(f"/snapshots/{s2}")).status_code == 404
            snaps = await asyncio.to_thread(rbd_snaps, ceph, image_name)
            assert set(snaps) == {f"snap-{s1}"}, snaps

            # 6. A volume from the image: a clone of the pool's corral-image-<id>@base.
            body = {"name": "fromimg", "size_gb": 1, "pool": "ceph", "image": "tiny", "vm": "vm1"}
            op = await finished(c, await c.post("/volumes", json=body), timeout=180)
            assert op["type"] == "volume.attach", op
            img_vol = (await c.get("/volumes/fromimg")).json()
            iid = img_vol["id"]
            assert img_vol["image_id"] == image["id"]
            img_vol_name = await pool_name(stack, iid)
            info = await asyncio.to_thread(rbd_info, ceph, img_vol_name)
            parent = info.get("parent", {})
            assert (parent.get("image"), parent.get("snapshot")) == (
                f"corral-image-{image['id']}",
                "base",
            ), info
            assert info["size"] == GIB
            dev = await wait_device(iid, GIB)
            expected = await asyncio.to_thread(raw_head_sha, test_image, workdir)
            got = await sh(f"dd if=/dev/{dev} bs=1M count=1 2>/dev/null | sha256sum")
            assert got.split()[0] == expected  # the guest reads the image on it
            await finished(c, await c.post("/volumes/fromimg/detach"))
            await wait_gone(iid)
            await finished(c, await c.delete("/volumes/fromimg"))
            images_now = await asyncio.to_thread(rbd_images, ceph)
            assert img_vol_name not in images_now
            assert f"corral-image-{image['id']}" in images_now  # the pool's copy stays

            # 7. Detach and delete the data volume (with s1), delete the VM.
            await finished(c, await c.post("/volumes/data/detach"))
            await wait_gone(vid)
            await finished(c, await c.delete("/volumes/data"))
            assert (await c.get("/volumes/data")).status_code == 404
            assert (await c.get(f"/snapshots/{s1}")).status_code == 404
            await finished(c, await c.delete("/vms/vm1"), timeout=180)
            ours = await asyncio.to_thread(rbd_images, ceph) - before
            assert ours == {f"corral-image-{image['id']}"}, ours
            print(
                f"\nstack rbd: {time.monotonic() - started:.1f} s in all, pool ok after "
                f"{reported - started:.1f} s, guest up after {booted - started:.1f} s, "
                f"reverted and rebooted after {reverted - started:.1f} s"
            )
    finally:
        if vm_id:
            remove_domain(system_conn, f"corral-{vm_id}")
        # The test's images: the pool's base copy of the image (kept by design) and whatever a
        # failure left behind.
        left = await asyncio.to_thread(lambda: remove_images(ceph, rbd_images(ceph) - before))
        if pool_id:  # the cephx secret the agent defined for the pool's disks
            try:
                usage = f"corral-pool-{pool_id}"
                system_conn.secretLookupByUsage(
                    libvirt.VIR_SECRET_USAGE_TYPE_CEPH, usage
                ).undefine()
            except libvirt.libvirtError:
                pass
    assert not left, f"RBD images left in the pool: {left}"
