"""``<serial>``: the guest's first serial port (ttyS0) written to a log file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class FileSerial:
    """Serial port ``port`` written to ``path``. libvirt opens the file itself (as root) and hands
    QEMU the descriptor. ``append`` False truncates the log at each start of the VM (a reboot
    inside the guest keeps appending), which bounds its size to one boot."""

    path: str
    port: int = 0
    append: bool = False

    def element(self) -> ET.Element:
        serial = ET.Element("serial", type="file")
        source = sub(serial, "source", path=self.path)
        if self.append:
            source.set("append", "on")
        target = sub(serial, "target", type="isa-serial", port=str(self.port))
        sub(target, "model", name="isa-serial")
        return serial
