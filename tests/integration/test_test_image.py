"""The tiny test guest (scripts/build-test-image) boots under libvirt TCG, answers and powers off."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import libvirt_qemu  # type: ignore[import-untyped]
import pytest

from corral.agent.storage.dirpool import DirPool
from corral.api.agent import ImageRef

pytestmark = pytest.mark.libvirt

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-test-image"
BOOT_TIMEOUT = 90.0
SHUTDOWN_TIMEOUT = 60.0


def build_image(*args: str) -> Path:
    """Run the build script; its last stdout line is the image path."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_image() -> Path:
    """The cached tiny guest image (built on first use). Never boot it directly: use an overlay."""
    return build_image()


@pytest.fixture
def qemu_dir() -> Iterator[Path]:
    """A directory QEMU (user libvirt-qemu) can traverse; pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="corral-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    c = libvirt.open("qemu:///system")
    try:
        yield c
    finally:
        c.close()


def domain_xml(name: str, disk: Path, serial_log: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <features><acpi/><tcg><tb-cache unit='MiB'>32</tb-cache></tcg></features>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='{serial_log}'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>"""


def wait_for_line(log: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no serial log)"
    raise AssertionError(f"{needle!r} not seen in {timeout} s; serial log tail:\n{tail}")


def domain_exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def agent_ping(dom: libvirt.virDomain, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0))
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def guest_disk(image: Path, pool_root: Path) -> Path:
    """A VM disk made by the directory pool: an overlay on the pool's own copy of ``image`` (QEMU
    cannot reach ~/.cache, and libvirt chowns backing files, so the cached image is never used)."""

    async def fetch(_ref: ImageRef, dest: Path) -> None:
        await asyncio.to_thread(shutil.copyfile, image, dest)

    data = image.read_bytes()
    ref = ImageRef(
        id="tiny",
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        virtual_size_bytes=0,
        format="qcow2",
        download_path="/unused",
    )
    pool = DirPool(pool_root)
    return Path(asyncio.run(pool.create_vm_disk("vm-1", ref, 1, fetch)))


def test_build_prints_path_and_reuses_the_cache(tiny_image: Path) -> None:
    before = tiny_image.stat().st_mtime_ns
    assert build_image() == tiny_image
    assert tiny_image.stat().st_mtime_ns == before
    assert tiny_image.stat().st_mtime > SCRIPT.stat().st_mtime


def test_build_to_explicit_path(qemu_dir: Path) -> None:
    out = qemu_dir / "sub" / "guest.qcow2"
    assert build_image("--out", str(out)) == out
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert '"format": "qcow2"' in info
    assert [p.name for p in out.parent.iterdir()] == ["guest.qcow2"]  # no temp file left


@pytest.mark.parametrize("mode", ["default", "acpi"])
def test_boots_answers_agent_and_shuts_down_gracefully(
    tiny_image: Path,
    qemu_dir: Path,
    conn: libvirt.virConnect,
    mode: str,
    record_property: Callable[[str, object], None],
) -> None:
    cached = tiny_image.stat()
    disk = guest_disk(tiny_image, qemu_dir / "pool")
    serial = qemu_dir / "serial.log"
    name = f"corral-test-tiny-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    dom = conn.createXML(domain_xml(name, disk, serial), 0)
    try:
        ready = wait_for_line(serial, "GUEST-READY", BOOT_TIMEOUT)
        boot_s = time.monotonic() - start
        record_property("boot_to_guest_ready_s", round(boot_s, 2))
        print(f"boot to GUEST-READY: {boot_s:.1f} s (guest uptime {ready.split()[-1]} s)")

        assert agent_ping(dom) == '{"return":{}}'

        if mode == "acpi":
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        else:  # what `vm stop` does: libvirt picks the guest agent when it is connected
            dom.shutdown()
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        while domain_exists(conn, name):
            assert time.monotonic() < deadline, "guest did not power off on a graceful shutdown"
            time.sleep(0.2)
        assert "GUEST-SHUTDOWN" in serial.read_text(errors="replace")
    finally:
        if domain_exists(conn, name):
            conn.lookupByName(name).destroy()
    after = tiny_image.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_uid) == (
        cached.st_mtime_ns,
        cached.st_size,
        cached.st_uid,
    )
    assert os.access(tiny_image, os.R_OK)
