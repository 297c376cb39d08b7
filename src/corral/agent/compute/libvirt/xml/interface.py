"""``<interface>``: a virtio NIC on a Linux bridge, an Open vSwitch bridge or a libvirt network."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal

from corral.agent.compute.libvirt.xml.util import sub


@dataclass(frozen=True)
class Interface:
    """A NIC attached to ``source`` (bridge name or network name, per ``kind``).

    ``openvswitch`` adds ``<virtualport type='openvswitch'/>`` (then ``vlan_tag`` is allowed);
    ``target_dev`` names the host tap (libvirt picks ``vnetN`` when None).
    """

    kind: Literal["bridge", "network"]
    source: str
    mac: str
    model: str = "virtio"
    target_dev: str | None = None
    mtu: int | None = None
    openvswitch: bool = False
    vlan_tag: int | None = None

    def element(self) -> ET.Element:
        iface = ET.Element("interface", type=self.kind)
        sub(iface, "mac", address=self.mac)
        sub(iface, "source", **{self.kind: self.source})
        if self.openvswitch:
            sub(iface, "virtualport", type="openvswitch")
        if self.vlan_tag is not None:
            vlan = sub(iface, "vlan")
            sub(vlan, "tag", id=str(self.vlan_tag))
        if self.target_dev is not None:
            sub(iface, "target", dev=self.target_dev)
        sub(iface, "model", type=self.model)
        if self.mtu is not None:
            sub(iface, "mtu", size=str(self.mtu))
        return iface
