"""``<video>``: the display adapter VNC shows."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Video:
    """Standard VGA: works with every BIOS-booting guest, text mode included."""

    model: str = "vga"

    def element(self) -> ET.Element:
        video = ET.Element("video")
        sub(video, "model", type=self.model, heads="1", primary="yes")
        return video
