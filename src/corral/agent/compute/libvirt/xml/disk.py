"""``<disk>``: a file-backed virtio disk."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Disk:
    """A file disk. ``cache`` None keeps QEMU's default (writeback); ``none`` (O_DIRECT) is refused
    by some file systems (tmpfs), so it is never chosen implicitly."""

    source: str
    target: str = "vda"
    bus: Literal["virtio", "sata", "scsi", "ide"] = "virtio"
    format: Literal["qcow2", "raw"] = "qcow2"
    device: Literal["disk", "cdrom"] = "disk"
    readonly: bool = False
    cache: Literal["writeback", "writethrough", "none", "unsafe"] | None = None
    discard: Literal["unmap", "ignore"] | None = "unmap"

    def element(self) -> ET.Element:
        disk = ET.Element("disk", type="file", device=self.device)
        driver = sub(disk, "driver", name="qemu", type=self.format)
        if self.cache is not None:
            driver.set("cache", self.cache)
        if self.discard is not None and not self.readonly:
            driver.set("discard", self.discard)
        sub(disk, "source", file=self.source)
        sub(disk, "target", dev=self.target, bus=self.bus)
        if self.readonly:
            sub(disk, "readonly")
        return disk
