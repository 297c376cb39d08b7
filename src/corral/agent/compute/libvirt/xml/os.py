"""``<os>``: firmware type, machine and boot order."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Os:
    """HVM guest on ``machine`` (``pc`` is safe everywhere; q35 needs PCIe-aware guests) booting
    from the devices in ``boot`` order (``hd``, ``cdrom``, ``network``)."""

    machine: str = "pc"
    arch: str = "x86_64"
    boot: tuple[str, ...] = ("hd",)

    def element(self) -> ET.Element:
        os_ = ET.Element("os")
        sub(os_, "type", "hvm", arch=self.arch, machine=self.machine)
        for dev in self.boot:
            sub(os_, "boot", dev=dev)
        return os_
