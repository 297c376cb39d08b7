"""Read back what matters to Corral from a domain's XML (for describe and drift detection)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.metadata import VmMetadata

_KIB_PER = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024}
_KIB_PER |= {"m": 1024, "mib": 1024, "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2}


VOLUME_ALIAS_PREFIX = "ua-vol-"
NIC_ALIAS_PREFIX = "ua-nic-"
CDROM_ALIAS = "ua-cdrom"
"""The user alias of every VM's CD-ROM drive."""
CONFIG_DRIVE_ALIAS = "ua-configdrive"
"""The user alias of a VM's config drive (a second, read-only CD-ROM drive)."""


@dataclass(frozen=True)
class DataDiskFacts:
    """A data volume's disk in a domain: found by its alias ``ua-vol-<volume_id>``."""

    volume_id: str
    target: str
    source: str | None


@dataclass(frozen=True)
class NicFacts:
    """A Corral NIC in a domain: found by its alias ``ua-nic-<nic_id>``. ``port`` is the tap
    (``target dev``), ``interface_id`` the OVS virtualport's ``interfaceid``; None where the
    definition has nothing."""

    nic_id: str
    mac: str | None
    model: str | None
    bridge: str | None
    port: str | None
    tag: int | None
    interface_id: str | None
    mtu: int | None


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
    data_disks: tuple[DataDiskFacts, ...] = ()
    cdrom: str | None = None
    """The medium in the CD-ROM drive (see ``cdrom_drive``); None: empty or no drive."""
    config_drive: str | None = None
    """The ISO file of the config drive (alias ``ua-configdrive``); None: no config drive."""
    boot: tuple[str, ...] = ()
    nics: tuple[NicFacts, ...] = ()
    """Corral's NICs (aliased ``ua-nic-…``), in definition order; other interfaces are left out."""

    def data_disk(self, volume_id: str) -> DataDiskFacts | None:
        return next((d for d in self.data_disks if d.volume_id == volume_id), None)

    def nic(self, nic_id: str) -> NicFacts | None:
        return next((n for n in self.nics if n.nic_id == nic_id), None)


def _memory_mib(element: ET.Element | None) -> int:
    if element is None or not element.text:
        return 0
    kib = int(element.text) * _KIB_PER[element.get("unit", "KiB").lower()]
    return int(kib // 1024)


def _source(disk: ET.Element) -> str | None:
    source = disk.find("source")
    if source is None:
        return None
    return source.get("file") or source.get("dev") or source.get("name")


def _disk_path(domain: ET.Element) -> str | None:
    """The host-local root disk's source: target ``vda``, else the first disk that is not a
    volume; None when the root is a volume."""
    disks = list(domain.iterfind("devices/disk[@device='disk']"))
    for disk in disks:
        if disk.find("target[@dev='vda']") is not None:
            return _source(disk) if _volume_id(disk) is None else None
    for disk in disks:
        if _volume_id(disk) is None and (path := _source(disk)) is not None:
            return path
    return None


def _volume_id(disk: ET.Element) -> str | None:
    alias = disk.find("alias")
    name = alias.get("name", "") if alias is not None else ""
    if name.startswith(VOLUME_ALIAS_PREFIX) and len(name) > len(VOLUME_ALIAS_PREFIX):
        return name[len(VOLUME_ALIAS_PREFIX) :]
    return None


def _data_disks(domain: ET.Element) -> tuple[DataDiskFacts, ...]:
    found: list[DataDiskFacts] = []
    for disk in domain.iterfind("devices/disk"):
        volume_id = _volume_id(disk)
        if volume_id is not None:
            target = disk.find("target")
            dev = target.get("dev", "") if target is not None else ""
            found.append(DataDiskFacts(volume_id=volume_id, target=dev, source=_source(disk)))
    return tuple(found)


def disk_targets(xml: str) -> dict[str, str | None]:
    """Every disk's target device in a domain XML, with its data volume id (None for others)."""
    return {
        target.get("dev", ""): _volume_id(disk)
        for disk in ET.fromstring(xml).iterfind("devices/disk")
        if (target := disk.find("target")) is not None
    }


def _attr(element: ET.Element, path: str, name: str) -> str | None:
    found = element.find(path)
    return found.get(name) if found is not None else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _nics(domain: ET.Element) -> tuple[NicFacts, ...]:
    found: list[NicFacts] = []
    for iface in domain.iterfind("devices/interface"):
        alias = _attr(iface, "alias", "name") or ""
        if not alias.startswith(NIC_ALIAS_PREFIX) or len(alias) == len(NIC_ALIAS_PREFIX):
            continue
        found.append(
            NicFacts(
                nic_id=alias[len(NIC_ALIAS_PREFIX) :],
                mac=_attr(iface, "mac", "address"),
                model=_attr(iface, "model", "type"),
                bridge=_attr(iface, "source", "bridge"),
                port=_attr(iface, "target", "dev"),
                tag=_int(_attr(iface, "vlan/tag", "id")),
                interface_id=_attr(iface, "virtualport/parameters", "interfaceid"),
                mtu=_int(_attr(iface, "mtu", "size")),
            )
        )
    return tuple(found)


def nic_facts(xml: str) -> tuple[NicFacts, ...]:
    """Corral's NICs in a domain XML (see ``NicFacts``)."""
    return _nics(ET.fromstring(xml))


def _vnc_port(domain: ET.Element) -> int | None:
    graphics = domain.find("devices/graphics[@type='vnc']")
    port = int(graphics.get("port", "-1")) if graphics is not None else -1
    return port if port > 0 else None


def _alias(disk: ET.Element) -> str | None:
    alias = disk.find("alias")
    return alias.get("name") if alias is not None else None


def cdrom_drive(domain: ET.Element) -> ET.Element | None:
    """The ``<disk>`` of the domain's CD-ROM drive (where media are inserted): the one aliased
    ``ua-cdrom``, else the first CD-ROM that is not the config drive; None if there is none."""
    drives = list(domain.iterfind("devices/disk[@device='cdrom']"))
    for disk in drives:
        if _alias(disk) == CDROM_ALIAS:
            return disk
    return next((d for d in drives if _alias(d) != CONFIG_DRIVE_ALIAS), None)


def cdrom_target(xml: str) -> str | None:
    """The target device of the domain's CD-ROM drive (``cdrom_drive``); None if it has none."""
    disk = cdrom_drive(ET.fromstring(xml))
    target = disk.find("target") if disk is not None else None
    return target.get("dev") if target is not None else None


def _cdrom(domain: ET.Element) -> str | None:
    disk = cdrom_drive(domain)
    return _source(disk) if disk is not None else None


def _config_drive(domain: ET.Element) -> str | None:
    for disk in domain.iterfind("devices/disk"):
        if _alias(disk) == CONFIG_DRIVE_ALIAS:
            return _source(disk)
    return None


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
        data_disks=_data_disks(domain),
        cdrom=_cdrom(domain),
        config_drive=_config_drive(domain),
        boot=tuple(b.get("dev", "") for b in domain.iterfind("os/boot")),
        nics=_nics(domain),
    )
