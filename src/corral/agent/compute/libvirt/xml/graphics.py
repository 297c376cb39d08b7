"""``<graphics>``: a VNC server on the loopback with an automatically chosen port."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class VncGraphics:
    """VNC on ``listen`` (the console proxy connects there), port chosen by libvirt (>= 5900).
    VNC authentication uses only the first 8 characters of ``password``."""

    password: str
    listen: str = "127.0.0.1"

    def element(self) -> ET.Element:
        graphics = ET.Element("graphics", type="vnc", port="-1", autoport="yes", listen=self.listen)
        graphics.set("passwd", self.password)
        sub(graphics, "listen", type="address", address=self.listen)
        return graphics
