"""``<domain>``: the root element, its identity, lifecycle actions and devices."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from corral.agent.compute.libvirt.xml.clock import Clock
from corral.agent.compute.libvirt.xml.cpu import Cpu, Vcpu
from corral.agent.compute.libvirt.xml.features import TCG_TB_CACHE_MIB, Features
from corral.agent.compute.libvirt.xml.memory import Memory
from corral.agent.compute.libvirt.xml.metadata import VmMetadata
from corral.agent.compute.libvirt.xml.os import Os
from corral.agent.compute.libvirt.xml.util import render, sub

DomainType = Literal["kvm", "qemu"]


class Device(Protocol):
    """Anything that renders one element under ``<devices>``."""

    def element(self) -> ET.Element: ...


@dataclass(frozen=True)
class Domain:
    """A whole domain definition.

    ``type`` is ``kvm`` (hardware virtualization) or ``qemu`` (TCG emulation). A ``qemu`` domain
    always gets a bounded TCG translation cache, a ``kvm`` one never does, whatever ``features``
    says. Without ``uuid`` libvirt generates one (then a redefinition under the same name fails). The guest powering off destroys the QEMU process, a guest reboot restarts it in place.
    """

    type: DomainType
    name: str
    memory: Memory
    vcpu: Vcpu
    os: Os
    features: Features
    uuid: str | None = None
    title: str | None = None
    metadata: VmMetadata | None = None
    cpu: Cpu | None = None
    clock: Clock = field(default_factory=Clock)
    devices: tuple[Device, ...] = ()
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"

    def element(self) -> ET.Element:
        domain = ET.Element("domain", type=self.type)
        sub(domain, "name", self.name)
        if self.uuid is not None:
            sub(domain, "uuid", self.uuid)
        if self.title is not None:
            sub(domain, "title", self.title)
        if self.metadata is not None:
            domain.append(self.metadata.element())
        domain.extend(self.memory.elements())
        domain.append(self.vcpu.element())
        domain.append(self.os.element())
        domain.append(self._features().element())
        if self.cpu is not None:
            domain.append(self.cpu.element())
        domain.append(self.clock.element())
        sub(domain, "on_poweroff", self.on_poweroff)
        sub(domain, "on_reboot", self.on_reboot)
        sub(domain, "on_crash", self.on_crash)
        devices = sub(domain, "devices")
        devices.extend(device.element() for device in self.devices)
        return domain

    def to_xml(self) -> str:
        return render(self.element())

    def _features(self) -> Features:
        if self.type == "qemu":
            cache = self.features.tcg_tb_cache_mib or TCG_TB_CACHE_MIB
            return replace(self.features, tcg_tb_cache_mib=cache)
        return replace(self.features, tcg_tb_cache_mib=None)
