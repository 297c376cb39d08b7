"""Blocking operations on a domain's CD-ROM drive, run by the driver in worker threads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from corral.agent.compute.libvirt.disks import CONFIG, LIVE, is_active
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.xml.parse import cdrom_drive
from corral.agent.compute.libvirt.xml.util import sub
from corral.api.errors import InvalidState

FORCE = libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
"""Eject even if the guest locked the tray (a mounted disc)."""


def _drive(dom: Any, *, live: bool, vm_id: str) -> ET.Element | None:
    """The CD-ROM drive's ``<disk>`` (``parse.cdrom_drive``: never the config drive) of the live
    or persistent definition, None if there is none."""
    with libvirt_errors(vm_id=vm_id):
        xml = dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
    return cdrom_drive(ET.fromstring(xml))


def _medium(drive: ET.Element) -> str | None:
    source = drive.find("source")
    return source.get("file") if source is not None else None


def _with_medium(drive: ET.Element, path: str | None) -> str:
    """The drive's XML with ``path`` as its medium (None: empty), as ``updateDeviceFlags``
    takes it (the drive is found by its target)."""
    new = ET.Element("disk", type="file", device="cdrom")
    for child in drive:
        if child.tag in ("driver", "target", "readonly", "alias"):
            new.append(child)
    if path is not None:
        source = ET.Element("source", file=path)
        new.insert(1, source)
    if new.find("readonly") is None:
        sub(new, "readonly")
    return ET.tostring(new, encoding="unicode")


def change_medium(dom: Any, *, vm_id: str, path: str | None) -> None:
    """Insert ``path`` into (None: eject from) the drive, in the persistent definition and, if
    QEMU runs, live. What already holds ``path`` is left alone. ``InvalidState`` if the live
    domain has no CD-ROM drive (one cannot be hot-plugged on IDE or SATA)."""
    config = _drive(dom, live=False, vm_id=vm_id)
    if config is None:
        raise InvalidState(
            f"VM {vm_id} has no CD-ROM drive: redefine it (Corral defines one on every VM)",
            vm_id=vm_id,
        )
    if is_active(dom):
        live = _drive(dom, live=True, vm_id=vm_id)
        if live is None:
            raise InvalidState(
                f"VM {vm_id} runs without a CD-ROM drive: it gets one at its next start",
                vm_id=vm_id,
            )
        if _medium(live) != path:
            with libvirt_errors(vm_id=vm_id):
                dom.updateDeviceFlags(_with_medium(live, path), LIVE | FORCE)
    if _medium(config) != path:
        with libvirt_errors(vm_id=vm_id):
            dom.updateDeviceFlags(_with_medium(config, path), CONFIG)


def medium(dom: Any, *, vm_id: str) -> str | None:
    """The ISO file in the drive now (live while QEMU runs, else in the definition)."""
    drive = _drive(dom, live=is_active(dom), vm_id=vm_id)
    return _medium(drive) if drive is not None else None
