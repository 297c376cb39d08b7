"""``<rng>``: a virtio entropy source fed from the host's /dev/urandom."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Rng:
    """virtio-rng; guests otherwise wait for entropy at boot (e.g. cloud-init, sshd keys)."""

    def element(self) -> ET.Element:
        rng = ET.Element("rng", model="virtio")
        sub(rng, "backend", "/dev/urandom", model="random")
        return rng
