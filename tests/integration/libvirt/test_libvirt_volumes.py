"""LibvirtDriver data volumes on qemu:///system: definitions with data disks and pool secrets
(stopped domains, no boot), and one real TCG guest (``$CORRAL_TEST_IMAGE``) that sees a volume
hot-plugged, grown online, throttled, kept across stop/start and unplugged."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu
import pytest

from corral.agent.compute.libvirt import LibvirtDriver
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.backend import DiskAuth, DiskSource
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    DataDisk,
    PoolRef,
    VmDefine,
    VmPower,
    VmSpec,
    VolumeAttachTask,
    VolumeCreateTask,
    VolumeDeleteTask,
    VolumeDetachTask,
    VolumeRef,
    VolumeResizeTask,
)
from corral.api.errors import InvalidState, NotFound
from corral.api.volumes import VolumeQos
from tests.integration.libvirt.libvirt_itest import qcow2, wait_for_log
from tests.unit.agent.fakes import FakeVolumes

pytestmark = pytest.mark.libvirt

GIB = 1024**3
LOCAL = PoolRef(id="local-1", type="local", settings={})


def spec(vm_id: str, memory_mb: int = 64) -> VmSpec:
    return VmSpec(
        vm_id=vm_id, name=vm_id, cpus=1, memory_mb=memory_mb, disk_gb=1, vnc_password="pw"
    )


def volume_disk(device: str = "vdb", *, pool: PoolRef = LOCAL, **kw: Any) -> DataDisk:
    volume_id = uuid.uuid4().hex
    ref = VolumeRef(volume_id=volume_id, pool=pool, name=volume_id, size_gb=1)
    return DataDisk(volume=ref, device=device, **kw)


def file_source(path: Path) -> DiskSource:
    return DiskSource(kind="file", format="qcow2", path=str(path))


def xml_of(conn: Any, vm_id: str, *, live: bool) -> ET.Element:
    dom = conn.lookupByName(f"corral-{vm_id}")
    return ET.fromstring(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))


def disk_with_alias(root: ET.Element, volume_id: str) -> ET.Element | None:
    alias = f"ua-vol-{volume_id}"
    return next(
        (d for d in root.iterfind("devices/disk") if d.find(f"alias[@name='{alias}']") is not None),
        None,
    )


@pytest.fixture
def rbd_pool(system_conn: Any) -> Iterator[PoolRef]:
    """A pool id whose libvirt secret is removed afterwards."""
    pool = PoolRef(id=f"test-{uuid.uuid4().hex[:10]}", type="rbd", settings={})
    yield pool
    try:
        secret = system_conn.secretLookupByUsage(
            libvirt.VIR_SECRET_USAGE_TYPE_CEPH, f"corral-pool-{pool.id}"
        )
        secret.undefine()
    except libvirt.libvirtError:
        pass


async def test_stopped_vm_definition_with_volumes_and_pool_secret(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    system_conn: Any,
    rbd_pool: PoolRef,
) -> None:
    vm = new_vm_id()
    root = qcow2(workdir / "root.qcow2")
    local = volume_disk("vdb", qos=VolumeQos(total_iops_sec=50))
    key = base64.b64encode(b"0123456789abcdef").decode()
    rbd = volume_disk("vdc", pool=rbd_pool)
    rbd_source = DiskSource(
        kind="network",
        format="raw",
        protocol="rbd",
        name="vms/img",
        hosts=(("127.0.0.1", 6789),),
        auth=DiskAuth(type="ceph", username="corral", secret=key, pool_id=rbd_pool.id),
    )
    local_source = file_source(qcow2(workdir / "v1.qcow2", size="1G"))
    disks = [(local, local_source), (rbd, rbd_source)]
    await driver.define(spec(vm), str(root), disks)

    secret = system_conn.secretLookupByUsage(
        libvirt.VIR_SECRET_USAGE_TYPE_CEPH, f"corral-pool-{rbd_pool.id}"
    )
    assert ET.fromstring(secret.XMLDesc(0)).get("private") == "yes"
    described = await driver.describe(vm)
    assert described["disk_path"] == str(root)
    assert described["volumes"] == sorted([local.volume.volume_id, rbd.volume.volume_id])
    config = xml_of(system_conn, vm, live=False)
    rbd_xml = disk_with_alias(config, rbd.volume.volume_id)
    assert rbd_xml is not None
    assert rbd_xml.find("source").get("protocol") == "rbd"  # type: ignore[union-attr]
    assert rbd_xml.find("auth/secret").get("usage") == f"corral-pool-{rbd_pool.id}"  # type: ignore[union-attr]
    local_xml = disk_with_alias(config, local.volume.volume_id)
    assert local_xml is not None and local_xml.findtext("iotune/total_iops_sec") == "50"
    assert local_xml.findtext("serial") == local.volume.volume_id[:20]

    # Stopped VM: persistent definition only, every call idempotent.
    extra = volume_disk("vdd")
    extra_source = file_source(qcow2(workdir / "v2.qcow2", size="1G"))
    for _ in range(2):
        await driver.attach_disk(vm, extra, extra_source)
    assert disk_with_alias(xml_of(system_conn, vm, live=False), extra.volume.volume_id) is not None
    with pytest.raises(InvalidState, match="vdd"):
        await driver.attach_disk(vm, volume_disk("vdd"), extra_source)
    await driver.set_disk_qos(vm, extra.volume.volume_id, VolumeQos(write_bytes_sec=4096))
    extra_xml = disk_with_alias(xml_of(system_conn, vm, live=False), extra.volume.volume_id)
    assert extra_xml is not None and extra_xml.findtext("iotune/write_bytes_sec") == "4096"
    with pytest.raises(InvalidState):
        await driver.resize_disk(vm, extra.volume.volume_id, 2 * GIB)
    with pytest.raises(NotFound):
        await driver.set_disk_qos(vm, "not-attached", VolumeQos())
    for _ in range(2):
        await driver.detach_disk(vm, extra.volume.volume_id, timeout=0)
    assert disk_with_alias(xml_of(system_conn, vm, live=False), extra.volume.volume_id) is None
    await driver.detach_disk(new_vm_id(), extra.volume.volume_id, timeout=0)  # no such VM


class Guest:
    """Runs shell commands in the test image through the QEMU guest agent."""

    def __init__(self, dom: Any) -> None:
        self.dom = dom

    def _call(self, command: dict[str, Any]) -> Any:
        reply = libvirt_qemu.qemuAgentCommand(self.dom, json.dumps(command), 10, 0)
        return json.loads(reply)["return"]

    def wait_for_agent(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call({"execute": "guest-ping"})
                return
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def sh(self, script: str) -> str:
        """Run ``script`` with /bin/sh and return its stdout (AssertionError unless exit 0)."""
        pid = self._call(
            {
                "execute": "guest-exec",
                "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True},
            }
        )["pid"]
        deadline = time.monotonic() + 20
        while True:
            status = self._call({"execute": "guest-exec-status", "arguments": {"pid": pid}})
            if status["exited"]:
                break
            assert time.monotonic() < deadline, f"{script!r} still running"
            time.sleep(0.05)
        out = base64.b64decode(status.get("out-data", "")).decode()
        err = base64.b64decode(status.get("err-data", "")).decode()
        assert status.get("exitcode") == 0, f"{script!r} failed: {out}{err}"
        return out.strip()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_hot_plug_grow_qos_restart_and_unplug_on_a_running_guest(
    driver: LibvirtDriver,
    new_vm_id: Callable[[], str],
    workdir: Path,
    test_image: Path,
    system_conn: Any,
) -> None:
    started = time.monotonic()
    vm = new_vm_id()
    await driver.define(
        spec(vm, memory_mb=256), str(qcow2(workdir / "disk.qcow2", backing=test_image))
    )
    console = driver.console_dir / f"{vm}.log"

    async def boot() -> Guest:
        await driver.start(vm)
        await wait_for_log(console, timeout=90)
        guest = Guest(await asyncio.to_thread(system_conn.lookupByName, f"corral-{vm}"))
        await asyncio.to_thread(guest.wait_for_agent)
        return guest

    guest = await boot()
    disk = volume_disk("vdb")
    volume_id, serial = disk.volume.volume_id, disk.volume.volume_id[:20]
    source = file_source(qcow2(workdir / "volume.qcow2", size="1G"))

    async def sh(script: str) -> str:
        return await asyncio.to_thread(guest.sh, script)

    async def guest_size() -> int:
        return int(await sh("cat /sys/block/vdb/size 2>/dev/null || echo 0")) * 512

    # Hot-plug (twice: attached is success). The tiny guest has no udev, so instead of the
    # /dev/disk/by-id/virtio-<serial> link we read the serial that udev would use.
    for _ in range(2):
        await driver.attach_disk(vm, disk, source)

    async def plugged() -> bool:
        return await guest_size() == GIB

    await until(plugged, "the guest to see vdb")
    assert await sh("cat /sys/block/vdb/serial") == serial
    assert await sh("[ -b /dev/vdb ] && echo yes") == "yes"
    plugged_at = time.monotonic()

    # Online grow.
    await driver.resize_disk(vm, volume_id, 2 * GIB)
    await driver.resize_disk(vm, volume_id, GIB)  # never shrinks: success, nothing changes

    async def grown() -> bool:
        return await guest_size() == 2 * GIB

    await until(grown, "the guest to see 2 GiB")

    # QoS, live and persistent.
    qos = VolumeQos(total_iops_sec=300, read_bytes_sec=8 * 1024 * 1024)
    await driver.set_disk_qos(vm, volume_id, qos)
    for live in (True, False):
        tune = disk_with_alias(xml_of(system_conn, vm, live=live), volume_id)
        assert tune is not None
        assert tune.findtext("iotune/total_iops_sec") == "300"
        assert tune.findtext("iotune/read_bytes_sec") == str(8 * 1024 * 1024)
        assert tune.findtext("iotune/write_bytes_sec") is None

    # Stop + start: the persistent definition keeps the disk, its size and its limits.
    await driver.stop(vm, force=True, timeout=0)
    guest = await boot()
    await until(grown, "the restarted guest to see vdb at 2 GiB")
    assert await sh("cat /sys/block/vdb/serial") == serial
    live_disk = disk_with_alias(xml_of(system_conn, vm, live=True), volume_id)
    assert live_disk is not None and live_disk.findtext("iotune/total_iops_sec") == "300"

    # A guest that cannot release the disk (paused): InvalidState, the definition unchanged.
    await driver.pause(vm)
    with pytest.raises(InvalidState, match="did not release the disk"):
        await driver.detach_disk(vm, volume_id, timeout=1)
    assert disk_with_alias(xml_of(system_conn, vm, live=False), volume_id) is not None
    await driver.resume(vm)

    # Unplug: gone from the guest, the live and the persistent definitions.
    await driver.detach_disk(vm, volume_id, timeout=30)

    async def unplugged() -> bool:
        return await sh("[ -e /sys/block/vdb ] && echo yes || echo no") == "no"

    await until(unplugged, "the guest to lose vdb")
    for live in (True, False):
        assert disk_with_alias(xml_of(system_conn, vm, live=live), volume_id) is None
    assert (await driver.describe(vm))["volumes"] == []
    await driver.detach_disk(vm, volume_id, timeout=1)  # not attached: success
    await driver.stop(vm, force=True, timeout=0)
    print(
        f"\nvolume test: {time.monotonic() - started:.1f} s in all, "
        f"first boot + hot-plug {plugged_at - started:.1f} s"
    )


async def test_executor_volume_tasks_with_the_local_backend(
    driver: LibvirtDriver, new_vm_id: Callable[[], str], workdir: Path
) -> None:
    """The agent's volume tasks end to end on a local pool (the guest only sits in its BIOS:
    QEMU runs, so the grow is live)."""
    vm = new_vm_id()
    specs = SpecStore(workdir / "vms")
    specs.open()
    pool = PoolRef(id="local-1", type="local", settings={"path": str(workdir / "pool")})
    root = FakeVolumes(workdir)
    qcow2(Path(root.disk_path(vm)))

    async def fetch(*_: object) -> None:
        raise AssertionError("no image is fetched here")

    ex = TaskExecutor(
        compute=driver,
        volumes=root,
        specs=specs,
        faults=FaultPlan(),
        fetch=fetch,
        drift={},
        backends=Backends({"local": LocalBackend()}),
    )
    disk = volume_disk("vdb", pool=pool)
    ref = disk.volume
    await ex.run(VolumeCreateTask(volume=ref))
    await ex.run(VmDefine(spec=spec(vm)))
    await ex.run(VolumeAttachTask(vm_id=vm, disk=disk))
    stored = specs.get(vm)
    assert stored is not None and stored.spec.disks == [disk]
    path = str(workdir / "pool" / "volumes" / ref.name)
    assert (await driver.describe(vm))["volumes"] == [ref.volume_id]

    await ex.run(VmPower(kind="vm.start", vm_id=vm))
    assert await ex.run(VolumeResizeTask(volume=ref, size_gb=2, vm_id=vm)) == {"live": True}
    await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
    assert await ex.run(VolumeResizeTask(volume=ref, size_gb=3, vm_id=vm)) == {"live": False}
    info = json.loads(
        await asyncio.to_thread(_qemu_img_info, path)  # virtual size after both grows
    )
    assert info["virtual-size"] == 3 * GIB
    with pytest.raises(InvalidState):
        await ex.run(VolumeDeleteTask(volume=ref))
    await ex.run(VolumeDetachTask(vm_id=vm, volume_id=ref.volume_id))
    await ex.run(VolumeDeleteTask(volume=ref))
    assert not Path(path).exists()
    stored = specs.get(vm)
    assert stored is not None and stored.spec.disks == []


def _qemu_img_info(path: str) -> str:
    return subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
