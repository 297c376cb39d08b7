"""``<interface>`` of a Corral VM NIC: a tap on the host's Open vSwitch bridge.

What libvirt 9.0 does with it (verified with QEMU 7.2 and OVS 3.1, userspace datapath): at
start or hot-plug it creates the tap ``target dev`` and runs the system ``ovs-vsctl`` to add it
to the bridge with the VLAN ``tag`` and ``external_ids`` ``iface-id`` (the ``interfaceid``),
``attached-mac`` and ``vm-id`` (the domain UUID); it deletes the port when the device goes away
(hot-unplug or the VM stops). ``<mtu>`` sets the tap's MTU and, for virtio, tells the guest.
``<bandwidth>`` becomes an OVS QoS (``linux-htb``, tc on the tap: traffic into the guest) and
``ingress_policing_rate`` (traffic from the guest; not enforced by the userspace datapath).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from corral.agent.compute.libvirt.xml.disk import USER_ALIAS
from corral.agent.compute.libvirt.xml.parse import NIC_ALIAS_PREFIX
from corral.agent.compute.libvirt.xml.util import sub
from corral.api.agent import NicSpec, kbps_to_libvirt, nic_interface_id
from corral.api.errors import InvalidInput


def nic_alias(nic_id: str) -> str:
    """The user alias of a NIC's device (``ua-nic-<nic_id>``): how the driver finds it again.
    ``InvalidInput`` for ids libvirt cannot carry in an alias."""
    alias = NIC_ALIAS_PREFIX + nic_id
    if not nic_id or not USER_ALIAS.match(alias):
        raise InvalidInput("nic id is not usable in a libvirt device alias", nic_id=nic_id)
    return alias


@dataclass(frozen=True)
class Bandwidth:
    """``<bandwidth>``: ``inbound`` (into the guest) and ``outbound`` (from it) averages in
    libvirt's unit, kilobytes/s (1000 bytes; see ``kbps_to_libvirt``); None: unlimited.

    ``inbound`` is also written as ``peak``: on Open vSwitch libvirt turns ``average`` alone
    into a guaranteed minimum rate (HTB ``min-rate``, ceiling 10 Gbit/s), not a limit; the
    peak is the ceiling (``max-rate``). On a Linux bridge it is the same HTB ceiling."""

    inbound: int | None = None
    outbound: int | None = None

    @property
    def empty(self) -> bool:
        return self.inbound is None and self.outbound is None

    def element(self) -> ET.Element:
        bandwidth = ET.Element("bandwidth")
        if self.inbound is not None:
            sub(bandwidth, "inbound", average=str(self.inbound), peak=str(self.inbound))
        if self.outbound is not None:
            sub(bandwidth, "outbound", average=str(self.outbound))
        return bandwidth


@dataclass(frozen=True)
class NicInterface:
    """A NIC on the Open vSwitch ``bridge``: ``<interface type='bridge'>`` with an
    ``openvswitch`` virtualport carrying ``interface_id``, the access VLAN ``vlan_tag``, the
    tap ``target_dev`` and the user ``alias`` (``ua-…``).

    ``tx_checksum_offload`` False (the default) writes ``<driver><host csum='off'/><guest
    csum='off'/></driver>`` on virtio NICs: QEMU then offers the guest no transmit checksum
    offload (virtio feature ``VIRTIO_NET_F_CSUM`` off), so every packet leaves the guest with
    its checksums computed. With the userspace datapath this is required for conntrack: a
    guest offloading its checksums sends TCP packets conntrack marks invalid (verified: with
    the offload on, a TCP connection through ``ct`` flows dropping ``+inv`` never opens; with
    it off it does). e1000 and rtl8139 are emulated by QEMU, which completes the checksums
    itself, and take no such element.
    """

    bridge: str
    mac: str
    target_dev: str
    alias: str
    interface_id: str
    model: str = "virtio"
    vlan_tag: int | None = None
    mtu: int | None = None
    bandwidth: Bandwidth = Bandwidth()
    tx_checksum_offload: bool = False

    def element(self) -> ET.Element:
        if not USER_ALIAS.match(self.alias):
            raise InvalidInput("invalid libvirt device alias", alias=self.alias)
        iface = ET.Element("interface", type="bridge")
        sub(iface, "source", bridge=self.bridge)
        port = sub(iface, "virtualport", type="openvswitch")
        sub(port, "parameters", interfaceid=self.interface_id)
        if self.vlan_tag is not None:
            sub(sub(iface, "vlan"), "tag", id=str(self.vlan_tag))
        sub(iface, "mac", address=self.mac)
        sub(iface, "model", type=self.model)
        if self.model == "virtio" and not self.tx_checksum_offload:
            driver = sub(iface, "driver")
            sub(driver, "host", csum="off")
            sub(driver, "guest", csum="off")
        sub(iface, "target", dev=self.target_dev)
        sub(iface, "alias", name=self.alias)
        if self.mtu is not None:
            sub(iface, "mtu", size=str(self.mtu))
        if not self.bandwidth.empty:
            iface.append(self.bandwidth.element())
        return iface


def nic_interface(nic: NicSpec) -> NicInterface:
    """The ``<interface>`` of ``nic``: its bridge, tag, MAC, model, port as the tap, alias
    ``ua-nic-<nic_id>``, ``interfaceid`` ``nic_interface_id(nic_id)``, MTU and limits
    (kbit/s converted to libvirt's unit). ``InvalidInput`` for an id unusable in an alias."""

    def rate(kbps: int | None) -> int | None:
        return None if kbps is None else kbps_to_libvirt(kbps)

    return NicInterface(
        bridge=nic.bridge,
        mac=nic.mac,
        target_dev=nic.port,
        alias=nic_alias(nic.nic_id),
        interface_id=nic_interface_id(nic.nic_id),
        model=nic.model,
        vlan_tag=nic.tag,
        mtu=nic.mtu,
        bandwidth=Bandwidth(inbound=rate(nic.inbound_kbps), outbound=rate(nic.outbound_kbps)),
    )
