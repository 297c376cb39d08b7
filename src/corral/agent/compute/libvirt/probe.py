"""Find out whether a domain type really runs guests here, by booting a throwaway guest."""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt

from corral.agent.compute.libvirt.bootsector import READY_MARKER, write_boot_disk
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.xml.cpu import Vcpu
from corral.agent.compute.libvirt.xml.disk import Disk
from corral.agent.compute.libvirt.xml.domain import Domain, DomainType
from corral.agent.compute.libvirt.xml.features import Features
from corral.agent.compute.libvirt.xml.memory import Memory
from corral.agent.compute.libvirt.xml.os import Os
from corral.agent.compute.libvirt.xml.serial import FileSerial
from corral.api.errors import DriverError

log = logging.getLogger(__name__)

PROBE_PREFIX = "corral.probe-"
"""Probe domains are named ``corral.probe-<type>-<hex>``: never mistaken for a VM."""
DEFAULT_TIMEOUT = 2.0
"""A healthy KVM host boots the probe in well under a second, TCG here in about 1.5 s; a
broken nested KVM needs 7 s or more for the same BIOS and then hangs real kernels."""


def probe_boot(conn: Any, *, domain_type: DomainType, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Boot a 16 MiB transient domain of ``domain_type`` whose boot sector prints a marker on
    the serial port and powers the guest off (``bootsector``). True iff the guest powered itself
    off within ``timeout`` seconds after printing the marker: the vCPU really executed guest
    code. CPU time is no evidence: a hung KVM vCPU burns CPU time in the kernel.

    Blocking (call from a worker thread); takes at most ``timeout`` plus domain creation and
    destruction. The domain is created with AUTODESTROY and always destroyed. ``DriverError``
    if libvirt refuses the domain.
    """
    with tempfile.TemporaryDirectory(prefix="corral-probe-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # QEMU (libvirt-qemu) must reach the disk
        disk = workdir / "boot.img"
        serial = workdir / "serial.log"
        write_boot_disk(disk, poweroff_after_ticks=1)
        domain = Domain(
            type=domain_type,
            name=f"{PROBE_PREFIX}{domain_type}-{uuid.uuid4().hex[:8]}",
            memory=Memory(16),
            vcpu=Vcpu(1),
            os=Os(),
            features=Features(acpi=True, apic=True, tcg_tb_cache_mib=8),
            devices=(
                Disk(source=str(disk), format="raw", readonly=True),
                FileSerial(path=str(serial)),
            ),
        )
        started = time.monotonic()
        with libvirt_errors(domain_type=domain_type):
            dom = conn.createXML(domain.to_xml(), libvirt.VIR_DOMAIN_START_AUTODESTROY)
        try:
            ran = _wait_until_off(dom, time.monotonic() + timeout)
        finally:
            _destroy(dom)
        marker = serial.exists() and READY_MARKER in serial.read_text(errors="replace")
        log.info(
            "probe %s: powered off=%s marker=%s in %.2f s",
            domain_type,
            ran,
            marker,
            time.monotonic() - started,
        )
        return ran and marker


def _wait_until_off(dom: Any, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            if not dom.isActive():
                return True
        except libvirt.libvirtError:  # a transient domain vanishes when it stops
            return True
        time.sleep(0.05)
    return False


def _destroy(dom: Any) -> None:
    try:
        dom.destroy()
    except libvirt.libvirtError:  # already gone
        pass


def kvm_in_capabilities(conn: Any) -> bool:
    """Whether libvirt offers ``<domain type='kvm'>`` at all (cheap; proves nothing)."""
    with libvirt_errors():
        caps = ET.fromstring(conn.getCapabilities())
    return caps.find("guest/arch/domain[@type='kvm']") is not None


def probe_kvm(conn: Any, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """True iff KVM guests really run here: libvirt offers KVM and a KVM guest boots within
    ``timeout`` (``probe_boot``). Never trusts ``/dev/kvm`` existing. Blocking; never raises
    for a KVM failure (that is the answer False)."""
    if not kvm_in_capabilities(conn):
        log.info("KVM not offered by libvirt")
        return False
    try:
        return probe_boot(conn, domain_type="kvm", timeout=timeout)
    except DriverError as exc:
        log.info("KVM guest refused: %s", exc)
        return False
