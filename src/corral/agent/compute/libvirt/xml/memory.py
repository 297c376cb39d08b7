"""``<memory>`` and ``<currentMemory>``: the guest's RAM."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Memory:
    """Guest RAM in MiB, fully given at boot (no balloon target below it)."""

    mib: int

    def elements(self) -> list[ET.Element]:
        parent = ET.Element("_")
        sub(parent, "memory", str(self.mib), unit="MiB")
        sub(parent, "currentMemory", str(self.mib), unit="MiB")
        return list(parent)
