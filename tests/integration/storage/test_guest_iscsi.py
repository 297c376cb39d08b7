"""An iSCSI LUN (tgtd, with and without CHAP) used by a real TCG guest.

The agent's ``TaskExecutor`` with the real backends and the real ``LibvirtDriver`` on
qemu:///system, as in ``test_guest_volumes`` (whose module guest fixtures this module reuses: one
guest of its own here): ``volume.create`` checks the LUN, ``volume.attach`` hot-plugs it (QEMU's
libiscsi logs in to the target itself, with CHAP through the pool's libvirt secret of usage type
``iscsi``), data written in the guest is found in the LUN's backing file on the target after a
detach and read back by the guest after a re-attach under another device; a LUN cannot grow
live beyond its size; detach and ``volume.delete`` zero the LUN on the target.

The LUN volume cannot join ``test_guest_volumes``'s lifecycle: that one grows the volume live
and expects ``volume.delete`` to remove it from the server, which a LUN does not allow.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from corral.api.agent import (
    DataDisk,
    PoolRef,
    VolumeAttachTask,
    VolumeCreateTask,
    VolumeDeleteTask,
    VolumeDetachTask,
    VolumeRef,
    VolumeResizeTask,
)
from corral.api.errors import DriverError
from tests.integration.libvirt.test_libvirt_volumes import disk_with_alias, until, xml_of
from tests.integration.storage.test_guest_volumes import (
    MIB,
    PATTERN_MIB,
    PATTERN_OFFSET_MIB,
    Host,
    pattern,
    qemu_drivers,
)
from tests.integration.storage.test_guest_volumes import base_image as base_image
from tests.integration.storage.test_guest_volumes import conn as conn
from tests.integration.storage.test_guest_volumes import host as host
from tests.integration.storage.test_guest_volumes import workdir as workdir
from tests.support.storage import iscsi
from tests.support.storage.daemons import Unavailable

libvirt = pytest.importorskip("libvirt")

pytestmark = [
    pytest.mark.storage_servers,
    pytest.mark.libvirt,
    pytest.mark.asyncio(loop_scope="module"),
]

GIB = 1 << 30
CHAP = ("corral-guest", "Guest-Chap-Secret-7")


@pytest.fixture(params=["plain", "chap"])
def target(request: pytest.FixtureRequest) -> Iterator[iscsi.IscsiTarget]:
    """A target with one 1 GiB LUN (number 1), open to all or requiring CHAP."""
    try:
        iscsi.check_available()
    except Unavailable as exc:
        pytest.skip(str(exc))
    with iscsi.iscsi_target((GIB,), chap=CHAP if request.param == "chap" else None) as t:
        yield t


@pytest.fixture
def pool(target: iscsi.IscsiTarget, conn: Any) -> Iterator[PoolRef]:
    """The target as a pool; the libvirt secret an attach defines for it is removed after."""
    pool_id = f"test-iscsi-{uuid.uuid4().hex[:8]}"
    yield PoolRef(
        id=pool_id,
        type="iscsi",
        settings={"portal": target.portal, "iqn": target.iqn},
        credentials=":".join(target.chap) if target.chap else None,
    )
    try:
        usage = f"corral-pool-{pool_id}"
        conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage).undefine()
    except libvirt.libvirtError:
        pass


def on_target(target: iscsi.IscsiTarget, lun: int, offset_mib: int, count_mib: int) -> bytes:
    """Bytes of the LUN read from its backing file on the target (behind QEMU's back)."""
    with target.luns[lun].open("rb") as f:
        f.seek(offset_mib * MIB)
        return f.read(count_mib * MIB)


async def test_a_lun_on_a_running_guest(
    host: Host, target: iscsi.IscsiTarget, pool: PoolRef, conn: Any
) -> None:
    started = time.monotonic()
    ex, vm_id = host.executor, host.vm_id
    volume = VolumeRef(volume_id=uuid.uuid4().hex, pool=pool, name="1", size_gb=1, format="raw")
    vid, serial = volume.volume_id, volume.volume_id[:20]
    try:
        await ex.run(VolumeCreateTask(volume=volume))

        # Hot-plug: QEMU logs in to the target itself; the guest sees the whole 1 GiB LUN.
        await ex.run(VolumeAttachTask(vm_id=vm_id, disk=DataDisk(volume=volume, device="vdb")))
        live = disk_with_alias(xml_of(conn, vm_id, live=True), vid)
        assert live is not None and live.get("type") == "network"
        source = live.find("source")
        assert source is not None
        assert (source.get("protocol"), source.get("name")) == ("iscsi", f"{target.iqn}/1")
        address = source.find("host")
        assert address is not None
        assert (address.get("name"), address.get("port")) == (target.host, str(target.port))
        auth = live.find("auth")
        if target.chap is None:
            assert auth is None
        else:  # CHAP through the pool's libvirt secret (usage type iscsi)
            assert auth is not None and auth.get("username") == CHAP[0]
            secret = auth.find("secret")
            assert secret is not None
            assert secret.attrib == {"type": "iscsi", "usage": f"corral-pool-{pool.id}"}
        assert "iscsi" in await asyncio.to_thread(qemu_drivers, conn, vm_id)
        dev = await host.wait_device(serial, GIB)

        # Write the pattern at an offset, flushed to the LUN.
        make, data = pattern(volume)
        seek = f"bs=1M seek={PATTERN_OFFSET_MIB} count={PATTERN_MIB} iflag=fullblock"
        await host.sh(f"{make} | dd of=/dev/{dev} {seek} conv=fsync 2>/dev/null && sync")
        await ex.run(VolumeDetachTask(vm_id=vm_id, volume_id=vid))

        async def released() -> bool:
            return await host.device_of(serial) == ""

        await until(released, "the guest to lose the disk")
        assert disk_with_alias(xml_of(conn, vm_id, live=True), vid) is None
        # It is on the target, in the LUN's backing file.
        stored = await asyncio.to_thread(on_target, target, 1, PATTERN_OFFSET_MIB, PATTERN_MIB)
        assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()

        # Attach again under another device: the guest reads the pattern back.
        await ex.run(VolumeAttachTask(vm_id=vm_id, disk=DataDisk(volume=volume, device="vdc")))
        dev = await host.wait_device(serial, GIB)
        skip = f"bs=1M skip={PATTERN_OFFSET_MIB} count={PATTERN_MIB}"
        read = await host.sh(f"dd if=/dev/{dev} {skip} 2>/dev/null | sha256sum")
        assert read.split()[0] == hashlib.sha256(data).hexdigest()

        # Live grow: the LUN's size is success, beyond it QEMU refuses (a LUN cannot grow).
        assert await ex.run(VolumeResizeTask(volume=volume, size_gb=1, vm_id=vm_id)) == {
            "live": True
        }
        with pytest.raises(DriverError) as grow:  # libvirt's error, not the backend's
            await ex.run(VolumeResizeTask(volume=volume, size_gb=2, vm_id=vm_id))
        assert "Cannot grow iSCSI devices" in grow.value.message
        assert await host.size_of(dev) == GIB
        spec = ex.specs.get(vm_id)
        assert spec is not None and spec.spec.disks[0].volume.size_gb == 1

        # Detach, delete: the LUN is zeroed on the target (it stays: the admin's).
        await ex.run(VolumeDetachTask(vm_id=vm_id, volume_id=vid))
        await until(released, "the guest to lose the disk again")
        await ex.run(VolumeDeleteTask(volume=volume))
        zeroed = await asyncio.to_thread(on_target, target, 1, 0, 16)
        assert zeroed == bytes(16 * MIB)
        assert target.luns[1].stat().st_size == GIB
        await ex.run(VolumeDeleteTask(volume=volume))  # again: success
    finally:
        try:
            await ex.run(VolumeDetachTask(vm_id=vm_id, volume_id=vid, timeout=5))
        except Exception:
            pass
    print(
        f"\niscsi ({'chap' if target.chap else 'plain'}): {time.monotonic() - started:.1f} s "
        f"(module's guest booted in {host.boot_s:.1f} s)"
    )
