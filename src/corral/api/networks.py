"""Networks: distributed switches, their port groups (the L2 segments VMs plug into) and the
subnets (IP pools) on them.

- A **switch** spans the hosts of the clusters it is attached to; on each host it uses an uplink
  (a host interface: ``uplink`` by default, ``uplinks`` per host). Its data plane is Open vSwitch
  on every host, programmed by the host agents from what the server computes.
- A **port group** is one L2 segment of a switch: ``flat`` (untagged on the uplink; one per
  switch), ``vlan`` (802.1Q tag ``segment_id`` 1-4094, unique per switch) or ``vxlan`` (VNI
  ``segment_id``, 24-bit, unique in the whole platform; VXLAN tunnels between the hosts). VMs
  in one port group share its configuration wherever they run.
- A **subnet** on a port group: a CIDR (IPv4 or IPv6), gateway, DNS servers, one or more
  allocation ranges and reserved addresses. IPAM hands out its addresses (a static request is
  allowed), never one twice; with ``dhcp`` every host serves its VMs of the port group their
  addresses (dnsmasq per port group and host).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from corral.api.common import Model, Name, Ref, Resource
from corral.api.operations import Operation

MAX_RANGES = 32
MAX_RESERVED = 1024
MAX_DNS = 4

InterfaceName = Annotated[
    str, StringConstraints(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
"""A Linux network interface name (at most 15 characters)."""


def _address(value: str) -> str:
    return str(ipaddress.ip_address(value))


def _network(value: str) -> str:
    return str(ipaddress.ip_network(value, strict=True))


IpAddress = Annotated[str, StringConstraints(max_length=64), AfterValidator(_address)]
"""An IPv4 or IPv6 address (kept in its canonical form)."""
Cidr = Annotated[str, StringConstraints(max_length=64), AfterValidator(_network)]
"""A network in CIDR notation, host bits zero (``10.0.0.0/24``, ``fd00::/64``)."""


class SwitchUplink(Model):
    host: Ref = Field(description="host id or name")
    interface: InterfaceName


class Switch(Resource):
    description: str = ""
    uplink: str = Field(description="the host interface used as uplink by default")
    uplinks: dict[str, str] = Field(
        default_factory=dict, description="per-host uplink interfaces (host id: interface)"
    )
    clusters: list[str] = Field(default_factory=list, description="attached cluster ids")
    mtu: int = Field(description="the MTU of the segments' VM ports")


class SwitchCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)
    uplink: InterfaceName = "eth0"
    uplinks: list[SwitchUplink] = Field(default_factory=list, max_length=10_000)
    clusters: list[Ref] = Field(default_factory=list, max_length=1000)
    mtu: int = Field(1500, ge=576, le=9000)


class SwitchUpdate(Model):
    name: Name | None = None
    description: str | None = Field(None, max_length=1024)
    uplink: InterfaceName | None = None
    uplinks: list[SwitchUplink] | None = Field(None, max_length=10_000)
    mtu: int | None = Field(None, ge=576, le=9000)


class SegmentType(StrEnum):
    flat = "flat"
    vlan = "vlan"
    vxlan = "vxlan"


VLAN_IDS = (1, 4094)
VNIS = (1, (1 << 24) - 1)


def check_segment(type: SegmentType, segment_id: int | None) -> None:
    """``ValueError`` unless ``segment_id`` fits ``type`` (flat: none; vlan 1-4094; vxlan
    1-16777215)."""
    if type == SegmentType.flat:
        if segment_id is not None:
            raise ValueError("a flat port group has no segment_id")
        return
    low, high = VLAN_IDS if type == SegmentType.vlan else VNIS
    if segment_id is None or not low <= segment_id <= high:
        raise ValueError(f"a {type.value} port group needs a segment_id in {low}-{high}")


class PortGroup(Resource):
    switch_id: str
    type: SegmentType
    segment_id: int | None = Field(None, description="VLAN id or VXLAN VNI; None for flat")
    description: str = ""
    mtu: int = Field(description="the MTU its VMs should use (the switch's, less 50 on vxlan)")


class PortGroupCreate(Model):
    name: Name
    switch: Ref = Field(description="switch id or name")
    type: SegmentType
    segment_id: int | None = None
    description: str = Field("", max_length=1024)

    @model_validator(mode="after")
    def _segment(self) -> Self:
        check_segment(self.type, self.segment_id)
        return self


class PortGroupUpdate(Model):
    name: Name | None = None
    description: str | None = Field(None, max_length=1024)


class IpRange(Model):
    """Addresses ``start`` to ``end`` (both included) of a subnet handed out by IPAM."""

    start: IpAddress
    end: IpAddress


class Subnet(Resource):
    port_group_id: str
    ip_version: int = Field(description="4 or 6")
    cidr: str
    gateway: str | None = None
    dns_servers: list[str] = Field(default_factory=list)
    ranges: list[IpRange] = Field(default_factory=list)
    reserved: list[str] = Field(default_factory=list)
    dhcp: bool
    description: str = ""
    used: int = Field(0, description="addresses allocated")
    available: int = Field(0, description="addresses of its ranges still free")


class SubnetCreate(Model):
    """A subnet on ``port_group``. ``gateway`` defaults to the CIDR's first host address
    (``no_gateway``: none); ``ranges`` default to every host address of the CIDR but the
    gateway. Ranges lie inside the CIDR and do not overlap; reserved addresses and the gateway
    are never handed out. Subnets of one port group do not overlap."""

    name: Name
    port_group: Ref = Field(description="port group id or name")
    cidr: Cidr
    gateway: IpAddress | None = None
    no_gateway: bool = Field(False, description="the subnet has no gateway")
    dns_servers: list[IpAddress] = Field(default_factory=list, max_length=MAX_DNS)
    ranges: list[IpRange] = Field(default_factory=list, max_length=MAX_RANGES)
    reserved: list[IpAddress] = Field(default_factory=list, max_length=MAX_RESERVED)
    dhcp: bool = True
    description: str = Field("", max_length=1024)


class SubnetUpdate(Model):
    name: Name | None = None
    description: str | None = Field(None, max_length=1024)
    dns_servers: list[IpAddress] | None = Field(None, max_length=MAX_DNS)
    ranges: list[IpRange] | None = Field(None, max_length=MAX_RANGES)
    reserved: list[IpAddress] | None = Field(None, max_length=MAX_RESERVED)
    dhcp: bool | None = None


class IpAllocation(Model):
    """An address of a subnet in use: by a VM NIC (``nic_id``) or held for later (none)."""

    subnet_id: str
    address: str
    nic_id: str | None = None
    vm_id: str | None = None
    created_at: datetime | None = Field(None, description="when it was allocated")


class IpAllocationRequest(Model):
    """Hold an address of a subnet for later use: ``address`` (a static request: inside the
    CIDR, not the gateway, network, broadcast or a reserved address, not in use) or, without it,
    the lowest free address of the subnet's ranges."""

    address: IpAddress | None = None


class IpAllocationHeld(Operation):
    """The finished operation of a hold, with the address held."""

    allocation: IpAllocation
