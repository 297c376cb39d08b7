"""Data volumes on NFS (nfs-ganesha) and Ceph RBD pools, used by a real TCG guest.

The agent's ``TaskExecutor`` with the real backends (``real_backends()``) and the real
``LibvirtDriver`` on qemu:///system: ``volume.create`` on the pool server, ``volume.attach`` to a
running guest (QEMU opens the network disk itself: libnfs as root through
``<identity user='root' group='root'/>``, librbd with the cephx key from a libvirt secret), data
written in the guest and read back after a detach and a re-attach under another device, checked
on the server behind the guest's back, a live grow the guest sees, live I/O limits, detach and
``volume.delete`` (gone from the server).

One guest (``$CORRAL_TEST_IMAGE``) serves the whole module; each pool type is one test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio

from corral.agent.compute.libvirt import LibvirtDriver, ensure_event_loop
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.volumes import real_backends
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
    VolumeQosTask,
    VolumeRef,
    VolumeResizeTask,
)
from corral.api.volumes import VolumeQos
from tests.integration.libvirt.libvirt_itest import qcow2, remove_domain, wait_for_log
from tests.integration.libvirt.test_libvirt_volumes import Guest, disk_with_alias, until, xml_of
from tests.support.storage.ceph import CephCluster
from tests.support.storage.nfs import NfsExport
from tests.unit.agent.fakes import FakeVolumes

libvirt = pytest.importorskip("libvirt")
libvirt_qemu = pytest.importorskip("libvirt_qemu")

pytestmark = [
    pytest.mark.storage_servers,
    pytest.mark.libvirt,
    pytest.mark.asyncio(loop_scope="module"),
]

URI = "qemu:///system"
GIB = 1 << 30
MIB = 1 << 20
PATTERN_OFFSET_MIB = 3  # where the pattern goes on the volume (not at 0: any offset works)
PATTERN_MIB = 4


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    ensure_event_loop()
    try:
        c = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {URI}: {exc}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="corral-test-guestvol-", dir="/var/tmp"))
    path.chmod(0o755)  # QEMU (libvirt-qemu) opens the root disk under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def base_image(workdir: Path) -> Path:
    """A copy of ``$CORRAL_TEST_IMAGE`` that QEMU can read (see the libvirt tests' conftest)."""
    image = os.environ.get("CORRAL_TEST_IMAGE")
    if not image or not Path(image).is_file():
        pytest.skip("CORRAL_TEST_IMAGE unset or missing: build it with scripts/build-test-image")
    copy = workdir / "base.qcow2"
    shutil.copyfile(image, copy)
    copy.chmod(0o644)
    return copy


@dataclass
class Host:
    """The agent's side: its executor, the domain's id and the guest running in it."""

    executor: TaskExecutor
    driver: LibvirtDriver
    vm_id: str
    guest: Guest
    boot_s: float

    async def sh(self, script: str) -> str:
        return await asyncio.to_thread(self.guest.sh, script)

    async def device_of(self, serial: str) -> str:
        """The guest's name (vdX) of the disk with ``serial``, "" if it has none. The tiny guest
        has no udev (no /dev/disk/by-id), and its names follow the plug order, not libvirt's
        ``<target dev>``."""
        return await self.sh(
            "for d in /sys/block/vd*; do "
            f'[ "$(cat $d/serial 2>/dev/null)" = "{serial}" ] && basename $d; done; true'
        )

    async def wait_device(self, serial: str, size: int) -> str:
        """Wait until the guest has the disk with ``serial`` at ``size`` bytes; its name."""
        found = ""

        async def seen() -> bool:
            nonlocal found
            found = await self.device_of(serial)
            return bool(found) and await self.size_of(found) == size

        await until(seen, f"the guest to see disk {serial} at {size} bytes", timeout=30)
        return found

    async def size_of(self, dev: str) -> int:
        return int(await self.sh(f"cat /sys/block/{dev}/size 2>/dev/null || echo 0")) * 512


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def host(conn: Any, workdir: Path, base_image: Path) -> AsyncIterator[Host]:
    """A running guest defined and started through the executor (real backends, TCG)."""
    started = time.monotonic()
    # kvm=False: TCG is what these machines run (KVM guests hang), and it spares the probe.
    driver = LibvirtDriver(
        uri=URI,
        console_dir=workdir / "console",
        disk_root=workdir,
        kvm=False,
        reboot_timeout=1.5,
        poll_interval=0.1,
    )
    await driver.open(lambda _event: None)
    specs = SpecStore(workdir / "vms")
    specs.open()
    root = FakeVolumes(workdir)

    async def fetch(*_: object) -> None:
        raise AssertionError("no image is fetched here")

    executor = TaskExecutor(
        compute=driver,
        volumes=root,
        specs=specs,
        faults=FaultPlan(),
        fetch=fetch,
        drift={},
        backends=real_backends(),
    )
    vm_id = f"test-{uuid.uuid4().hex[:10]}"
    try:
        qcow2(Path(root.disk_path(vm_id)), backing=base_image)
        spec = VmSpec(vm_id=vm_id, name=vm_id, cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw")
        await executor.run(VmDefine(spec=spec))
        await executor.run(VmPower(kind="vm.start", vm_id=vm_id))
        await wait_for_log(driver.console_dir / f"{vm_id}.log", timeout=90)
        guest = Guest(await asyncio.to_thread(conn.lookupByName, f"corral-{vm_id}"))
        await asyncio.to_thread(guest.wait_for_agent)
        yield Host(executor, driver, vm_id, guest, time.monotonic() - started)
    finally:
        remove_domain(conn, f"corral-{vm_id}")
        await driver.close()


# --- the pools -------------------------------------------------------------------------------


@dataclass
class Pool:
    """A pool on one of the fixture servers, and how to look at its volumes behind QEMU."""

    ref: PoolRef
    format: Literal["qcow2", "raw"]
    nfs: NfsExport | None = None
    ceph: CephCluster | None = None

    def volume(self) -> VolumeRef:
        vid = uuid.uuid4().hex
        suffix = ".qcow2" if self.format == "qcow2" else ""
        name = f"vol-{vid}{suffix}"
        return VolumeRef(
            volume_id=vid,
            pool=self.ref,
            name=name,
            size_gb=1,
            format=self.format,
        )

    def qemu_name(self, volume: VolumeRef) -> str:
        """qemu-img's filename of the volume (as root over NFS; as the cephx client on RBD)."""
        if self.ceph is not None:
            return self.ceph.qemu_filename(volume.name)
        return NfsBackend().url(volume)

    def exists(self, volume: VolumeRef) -> bool:
        """Whether the server still has the volume, asked without the agent's backend."""
        if self.ceph is not None:
            return volume.name in self.ceph.rbd("ls", self.ceph.pool).split()
        info = run("qemu-img", "info", "-U", "--output=json", self.qemu_name(volume))
        return info.returncode == 0

    def read(self, volume: VolumeRef, offset_mib: int, count_mib: int) -> bytes:
        """Bytes of the volume's contents (the guest's view), read straight from the server."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            # From the start: QEMU 7.2's dd counts ``skip`` blocks into ``count``.
            done = run(
                "qemu-img", "dd", "-f", self.format, "-O", "raw", "bs=1M",
                f"count={offset_mib + count_mib}", f"if={self.qemu_name(volume)}", f"of={out}",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return out.read_bytes()[offset_mib * MIB : (offset_mib + count_mib) * MIB]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(params=["nfs", "rbd"])
def pool(request: pytest.FixtureRequest, conn: Any) -> Iterator[Pool]:
    pool_id = f"test-{request.param}-{uuid.uuid4().hex[:8]}"
    if request.param == "nfs":
        export: NfsExport = request.getfixturevalue("nfs_dir")
        nfs = {"server": export.host, "export": export.path}
        yield Pool(PoolRef(id=pool_id, type="nfs", settings=nfs), "qcow2", nfs=export)
        return
    ceph: CephCluster = request.getfixturevalue("ceph_cluster")
    settings = {"monitors": [ceph.mon_host], "pool": ceph.pool, "user": ceph.client}
    ref = PoolRef(id=pool_id, type="rbd", settings=settings, credentials=ceph.key)
    yield Pool(ref, "raw", ceph=ceph)
    try:  # the executor's attach defined the pool's secret
        usage = f"corral-pool-{pool_id}"
        conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_CEPH, usage).undefine()
    except libvirt.libvirtError:
        pass


def pattern(volume: VolumeRef) -> tuple[str, bytes]:
    """A shell pipeline printing ``PATTERN_MIB`` MiB of this volume's own pattern, and the same
    bytes (made here) to compare with."""
    line = f"corral volume {volume.volume_id} pattern line\n"
    size = PATTERN_MIB * MIB
    data = (line * (size // len(line) + 1)).encode()[:size]
    return f"yes 'corral volume {volume.volume_id} pattern line' | head -c {size}", data


# --- the test --------------------------------------------------------------------------------


async def test_volume_lifecycle_on_a_running_guest(host: Host, pool: Pool, conn: Any) -> None:
    started = time.monotonic()
    ex, vm_id = host.executor, host.vm_id
    volume = pool.volume()
    vid, serial = volume.volume_id, volume.volume_id[:20]
    try:
        await ex.run(VolumeCreateTask(volume=volume))
        assert pool.exists(volume)

        # Hot-plug: QEMU opens the volume on the server; the guest sees a 1 GiB disk.
        first = DataDisk(volume=volume, device="vdb")
        await ex.run(VolumeAttachTask(vm_id=vm_id, disk=first))
        live = disk_with_alias(xml_of(conn, vm_id, live=True), vid)
        assert live is not None and live.get("type") == "network"
        source = live.find("source")
        assert source is not None and source.get("protocol") == pool.ref.type
        if pool.ceph is not None:  # cephx through the pool's libvirt secret
            secret = live.find("auth/secret")
            assert secret is not None and secret.get("usage") == f"corral-pool-{pool.ref.id}"
        else:  # libnfs as root, the owner of the 0600 file
            identity = source.find("identity")
            assert identity is not None and identity.attrib == {"user": "root", "group": "root"}
        assert pool.ref.type in await asyncio.to_thread(qemu_drivers, conn, vm_id)
        dev = await host.wait_device(serial, GIB)

        # Write the pattern at an offset, flushed to the volume.
        make, data = pattern(volume)
        seek = f"bs=1M seek={PATTERN_OFFSET_MIB} count={PATTERN_MIB} iflag=fullblock"
        await host.sh(f"{make} | dd of=/dev/{dev} {seek} conv=fsync 2>/dev/null && sync")
        await ex.run(VolumeDetachTask(vm_id=vm_id, volume_id=vid))

        async def released() -> bool:
            return await host.device_of(serial) == ""

        await until(released, "the guest to lose the disk")
        assert disk_with_alias(xml_of(conn, vm_id, live=True), vid) is None
        # It is on the server, not in some cache of QEMU's.
        on_server = await asyncio.to_thread(pool.read, volume, PATTERN_OFFSET_MIB, PATTERN_MIB)
        assert hashlib.sha256(on_server).hexdigest() == hashlib.sha256(data).hexdigest()

        # Attach again under another device: the guest reads the pattern back.
        second = DataDisk(volume=volume, device="vdc")
        await ex.run(VolumeAttachTask(vm_id=vm_id, disk=second))
        stored = ex.specs.get(vm_id)
        assert stored is not None and stored.spec.disks == [second]
        dev = await host.wait_device(serial, GIB)
        skip = f"bs=1M skip={PATTERN_OFFSET_MIB} count={PATTERN_MIB}"
        read = await host.sh(f"dd if=/dev/{dev} {skip} 2>/dev/null | sha256sum")
        assert read.split()[0] == hashlib.sha256(data).hexdigest()

        # Online grow: QEMU grows the image on the server, the guest sees the size at once.
        grown = volume.model_copy(update={"size_gb": 2})
        result = await ex.run(VolumeResizeTask(volume=volume, size_gb=2, vm_id=vm_id))
        assert result == {"live": True}
        await host.wait_device(serial, 2 * GIB)
        stored = ex.specs.get(vm_id)
        assert stored is not None and stored.spec.disks[0].volume == grown
        assert await asyncio.to_thread(virtual_size, pool, volume) == 2 * GIB

        # Live I/O limits, in the live and the persistent definitions.
        qos = VolumeQos(read_iops_sec=400, write_bytes_sec=16 * MIB)
        await ex.run(VolumeQosTask(vm_id=vm_id, volume_id=vid, qos=qos))
        for is_live in (True, False):
            tuned = disk_with_alias(xml_of(conn, vm_id, live=is_live), vid)
            assert tuned is not None
            assert tuned.findtext("iotune/read_iops_sec") == "400"
            assert tuned.findtext("iotune/write_bytes_sec") == str(16 * MIB)
            assert tuned.findtext("iotune/total_iops_sec") is None

        # Detach, delete: gone from the server.
        await ex.run(VolumeDetachTask(vm_id=vm_id, volume_id=vid))
        await until(released, "the guest to lose the disk again")
        for is_live in (True, False):
            assert disk_with_alias(xml_of(conn, vm_id, live=is_live), vid) is None
        await ex.run(VolumeDeleteTask(volume=grown))
        assert not pool.exists(volume)
        await ex.run(VolumeDeleteTask(volume=grown))  # absent: success
    finally:
        try:
            await ex.run(VolumeDetachTask(vm_id=vm_id, volume_id=vid, timeout=5))
            await ex.run(VolumeDeleteTask(volume=volume))
        except Exception:
            pass
    print(
        f"\n{pool.ref.type}: {time.monotonic() - started:.1f} s "
        f"(module's guest booted in {host.boot_s:.1f} s)"
    )


def virtual_size(pool: Pool, volume: VolumeRef) -> int:
    info = run("qemu-img", "info", "-U", "--output=json", pool.qemu_name(volume))
    assert info.returncode == 0, info.stderr
    return int(json.loads(info.stdout)["virtual-size"])


def qemu_drivers(conn: Any, vm_id: str) -> set[str]:
    """The block drivers of QEMU's block nodes (``nfs``, ``rbd``: its own network clients)."""
    dom = conn.lookupByName(f"corral-{vm_id}")
    command = {"execute": "query-named-block-nodes", "arguments": {"flat": True}}
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(command), 0))
    return {node["drv"] for node in reply["return"]}
