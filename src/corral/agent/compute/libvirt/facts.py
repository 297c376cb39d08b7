"""Host facts from libvirt (CPU, versions, hypervisor) and psutil (memory, disk)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import psutil

from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.api.hosts import HostFacts

_GIB = 1024**3


def version_string(version: int) -> str:
    """libvirt's packed version (major * 1e6 + minor * 1e3 + micro) as ``major.minor.micro``."""
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


def host_facts(conn: Any, *, disk_root: Path, kvm_usable: bool) -> HostFacts:
    """Describe the host behind ``conn``; disk figures are those of the file system holding
    ``disk_root``. Blocking (call from a worker thread)."""
    with libvirt_errors():
        arch, _mem, cpus, _mhz, nodes, sockets, cores, _threads = conn.getInfo()
        caps = ET.fromstring(conn.getCapabilities())
        hostname = conn.getHostname()
        lib_version = conn.getLibVersion()
        qemu_version = conn.getVersion()
    vendor = caps.findtext("host/cpu/vendor", "")
    model = caps.findtext("host/cpu/model", "") or "unknown"
    disk = psutil.disk_usage(str(disk_root))
    return HostFacts(
        hostname=str(hostname),
        arch=str(arch),
        cpu_model=f"{vendor} {model}".strip(),
        cpu_sockets=int(nodes) * int(sockets),
        cpu_cores=int(nodes) * int(sockets) * int(cores),
        cpu_threads=int(cpus),
        memory_mb=psutil.virtual_memory().total // (1024 * 1024),
        disk_gb_total=round(disk.total / _GIB, 2),
        disk_gb_free=round(disk.free / _GIB, 2),
        hypervisor="kvm" if kvm_usable else "qemu",
        kvm_usable=kvm_usable,
        libvirt_version=version_string(int(lib_version)),
        qemu_version=version_string(int(qemu_version)) if qemu_version else None,
        driver="libvirt",
    )
