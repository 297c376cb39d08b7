"""Fixtures of the libvirt driver's integration tests: the real qemu:///system with TCG guests.

Every domain a test creates is named ``corral-test-*`` (or ``corral.probe-*`` by the probe) and
removed afterwards, even when the test fails. Per-test files live under /var/tmp (0755) so that
QEMU (libvirt-qemu) can open the disks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import LibvirtDriver, ensure_event_loop, probe_kvm
from tests.integration.libvirt.libvirt_itest import Recorder, remove_domain
from tests.support.ovs import SystemOvs, ovs_available

URI = "qemu:///system"


@pytest.fixture(scope="session")
def system_conn() -> Iterator[Any]:
    """A plain libvirt connection for setup, inspection and cleanup (skips if libvirtd is down)."""
    ensure_event_loop()
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {URI}: {exc}")
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img missing")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def kvm_probe(system_conn: Any) -> tuple[bool, float]:
    """``probe_kvm`` run once per session: (result, seconds it took)."""
    started = time.monotonic()
    usable = probe_kvm(system_conn)
    return usable, time.monotonic() - started


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="corral-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def new_vm_id(system_conn: Any) -> Iterator[Callable[[], str]]:
    """``new_vm_id()`` hands out ``test-<hex>`` ids (domains ``corral-test-<hex>``); each is
    destroyed and undefined at teardown whatever happened."""
    issued: list[str] = []

    def new() -> str:
        issued.append(f"test-{uuid.uuid4().hex[:10]}")
        return issued[-1]

    yield new
    for vm_id in issued:
        remove_domain(system_conn, f"corral-{vm_id}")


@pytest.fixture
def events() -> Recorder:
    return Recorder()


@pytest.fixture
async def driver(
    workdir: Path, events: Recorder, kvm_probe: tuple[bool, float]
) -> AsyncIterator[LibvirtDriver]:
    drv = LibvirtDriver(
        uri=URI,
        console_dir=workdir / "console",
        disk_root=workdir,
        kvm=kvm_probe[0],
        reboot_timeout=1.5,
        poll_interval=0.1,
    )
    await drv.open(events)
    yield drv
    await drv.close()


@pytest.fixture
def test_image(workdir: Path) -> Path:
    """A copy, readable by QEMU, of the bootable test image from ``scripts/build-test-image``
    (``$CORRAL_TEST_IMAGE``; the cache under ~ is usually not readable by libvirt-qemu)."""
    image = os.environ.get("CORRAL_TEST_IMAGE")
    if not image or not Path(image).is_file():
        pytest.skip("CORRAL_TEST_IMAGE unset or missing: build it with scripts/build-test-image")
    copy = workdir / "base.qcow2"
    shutil.copyfile(image, copy)
    copy.chmod(0o644)
    return copy


@pytest.fixture
def system_ovs() -> SystemOvs:
    """The system Open vSwitch, started by ``scripts/ensure-ovs`` if needed (skips without
    it)."""
    if not ovs_available():
        pytest.skip("Open vSwitch is not installed (openvswitch-switch)")
    ovs = SystemOvs()
    try:
        ovs.start()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"the system Open vSwitch cannot be started: {exc.stderr}")
    return ovs
