"""``<vcpu>`` and ``<cpu>``: how many vCPUs and what CPU the guest sees."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from corral.agent.compute.libvirt.xml.util import sub

CpuMode = Literal["host-model", "host-passthrough", "maximum"]


@dataclass(frozen=True)
class Vcpu:
    """``<vcpu placement='static'>count</vcpu>``."""

    count: int

    def element(self) -> ET.Element:
        vcpu = ET.Element("vcpu", placement="static")
        vcpu.text = str(self.count)
        return vcpu


@dataclass(frozen=True)
class Cpu:
    """``<cpu>``: the model (``mode``; None keeps the hypervisor default, e.g. qemu64 under TCG)
    and a topology of one socket with ``cores`` cores, so guests count cores, not sockets."""

    cores: int
    mode: CpuMode | None = None

    def element(self) -> ET.Element:
        cpu = ET.Element("cpu")
        if self.mode is not None:
            cpu.set("mode", self.mode)
            if self.mode == "host-model":
                cpu.set("check", "partial")
        sub(cpu, "topology", sockets="1", dies="1", cores=str(self.cores), threads="1")
        return cpu
