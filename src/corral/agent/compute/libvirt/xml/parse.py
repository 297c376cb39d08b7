"""Read back what matters to Corral from a domain's XML (for describe and drift detection)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.metadata import VmMetadata

_KIB_PER = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024}
_KIB_PER |= {"m": 1024, "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2}


@dataclass(frozen=True)
class DomainFacts:
    """The parts of a domain definition Corral compares with its spec."""

    domain_type: str
    domain_name: str
    vm_id: str | None
    name: str | None
    cpus: int
    memory_mb: int
    disk_path: str | None
    vnc_port: int | None


def _memory_mib(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    kib = int(element.text) * _KIB_PER[element.get("unit", "KiB").lower()]
    return int(kib // 1024)


def _disk_path(domain: ET.Element) -> str | None:
    for disk in domain.iterfind("devices/disk[@device='disk']"):
        source = disk.find("source")
        if source is not None:
            return source.get("file") or source.get("dev") or source.get("name")
    return None


def _vnc_port(domain: ET.Element) -> int | None:
    graphics = domain.find("devices/graphics[@type='vnc']")
    port = int(graphics.get("port", "-1")) if graphics is not None else -1
    return port if port > 0 else None


def parse_domain(xml: str) -> DomainFacts:
    """Parse ``virDomainGetXMLDesc`` output. The VNC port is known only while the VM runs."""
    domain = ET.fromstring(xml)
    meta = VmMetadata.find(domain)
    title = domain.findtext("title")
    return DomainFacts(
        domain_type=domain.get("type", ""),
        domain_name=domain.findtext("name", ""),
        vm_id=meta.vm_id if meta else None,
        name=meta.name if meta else title,
        cpus=int(domain.findtext("vcpu", "0")),
        memory_mb=_memory_mib(domain.find("memory")),
        disk_path=_disk_path(domain),
        vnc_port=_vnc_port(domain),
    )
