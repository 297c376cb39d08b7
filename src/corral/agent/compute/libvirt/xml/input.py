"""``<input>``: a USB tablet so the VNC pointer follows the mouse exactly."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class Tablet:
    """Absolute pointing device on the USB bus."""

    def element(self) -> ET.Element:
        return ET.Element("input", type="tablet", bus="usb")
