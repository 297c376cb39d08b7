"""What a host's network must be, as the server (the network's controller) computes it and the
host agent applies it: the L2 segments on its Open vSwitch (``HostNetwork``), the DHCP/DNS
service of each port group (``DhcpSegment``), and the integration bridge's flows.

Pure models (no I/O): the agent's ``corral.agent.network`` applies them, the server's
``corral.server.netplan`` builds them.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyInterface,
    model_validator,
)

from corral.api.common import Model
from corral.api.networks import InterfaceName, IpAddress, SegmentType, check_segment

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_LEASE_TIME_RE = re.compile(r"^\d+[smhdw]?$")
_IFNAME_RE = r"^[A-Za-z0-9_.-]{1,15}$"


# --------------------------------------------------------------------------------------------
# What one port group's DHCP service on a host must serve


def _mac(value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {value!r}")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"a multicast MAC address: {value!r}")
    return mac


def _hostname(value: str) -> str:
    name = value.lower()
    # dnsmasq reads a bare number (with an optional unit) or these words as a lease time / flag
    if not _LABEL_RE.match(name) or _LEASE_TIME_RE.match(name) or name in ("infinite", "ignore"):
        raise ValueError(f"not a usable host name (one DNS label): {value!r}")
    return name


def _domain(value: str) -> str:
    name = value.lower().rstrip(".")
    if len(name) > 253 or not all(_LABEL_RE.match(label) for label in name.split(".")):
        raise ValueError(f"not a domain name: {value!r}")
    return name


MacAddress = Annotated[str, AfterValidator(_mac)]
Hostname = Annotated[str, AfterValidator(_hostname)]
DomainName = Annotated[str, AfterValidator(_domain)]


def _is_host_address(address: IPAddress, net: IPNetwork) -> bool:
    """``address`` is in ``net`` and neither its network nor (IPv4) broadcast address (a /31,
    /32, /127 or /128 has only host addresses)."""
    if address.version != net.version or address not in net:
        return False
    if net.num_addresses <= 2:
        return True
    if address == net.network_address:
        return False
    return not (net.version == 4 and address == net.broadcast_address)


class DhcpHost(BaseModel):
    """What one NIC (by its MAC, the key in ``DhcpSegment.hosts``) gets: its IPv4 and/or IPv6
    address and optionally its host name (one DNS label, sent as option 12 / used for DNS)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None
    hostname: Hostname | None = None

    @model_validator(mode="after")
    def _some_address(self) -> DhcpHost:
        if self.ipv4 is None and self.ipv6 is None:
            raise ValueError("a DHCP host needs an IPv4 or an IPv6 address")
        return self


class DhcpSubnet(BaseModel):
    """One subnet served on the segment. ``server_address``: the address reserved for the DHCP
    server in it (held by the namespace's interface; dnsmasq answers from it). ``gateway``: the
    IPv4 router option (IPv6: only the route of the server's namespace when it serves DNS; guests
    learn their IPv6 router from router advertisements). ``dns_servers``: sent to the guests
    (when ``DhcpSegment.serve_dns``: the upstreams dnsmasq forwards to, and the guests get
    ``server_address`` instead)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cidr: IPNetwork
    server_address: IPAddress
    gateway: IPAddress | None = None
    dns_servers: list[IPAddress] = Field(default_factory=list, max_length=4)

    @model_validator(mode="after")
    def _consistent(self) -> DhcpSubnet:
        if not _is_host_address(self.server_address, self.cidr):
            raise ValueError(
                f"server address {self.server_address} is no host address of {self.cidr}"
            )
        if self.gateway is not None:
            if not _is_host_address(self.gateway, self.cidr):
                raise ValueError(f"gateway {self.gateway} is no host address of {self.cidr}")
            if self.gateway == self.server_address:
                raise ValueError("the gateway cannot be the DHCP server's address")
        for dns in self.dns_servers:
            if dns.version != self.cidr.version:
                raise ValueError(f"DNS server {dns} is not IPv{self.cidr.version} like {self.cidr}")
        return self


class DhcpSegment(BaseModel):
    """One port group's DHCP/DNS service on one host.

    ``bridge``: the OVS bridge (integration bridge) the server's port goes on, ``tag``: the
    segment's VLAN tag on that bridge (None: untagged). ``lease_time`` in seconds (dnsmasq's
    minimum is 120). ``mtu``: sent as the IPv4 interface-MTU option and set on the server's
    interface. ``serve_dns``: dnsmasq also answers DNS on its addresses (the hosts' names,
    under ``domain`` when given; other names forwarded to the subnets' ``dns_servers``) and the
    guests get it as their DNS server; otherwise DNS is off (``port=0``) and the guests get the
    subnets' ``dns_servers``. ``hosts``: MAC → address(es)/name; every other MAC is ignored.

    Validation: subnets do not overlap, each host address is a host address of one subnet of its
    version and neither a server address nor a gateway, no address serves two MACs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    port_group_id: str = Field(min_length=1, max_length=200)
    bridge: str = Field(pattern=_IFNAME_RE)
    tag: int | None = Field(None, ge=1, le=4094)
    subnets: list[DhcpSubnet] = Field(min_length=1, max_length=16)
    domain: DomainName | None = None
    lease_time: int = Field(86_400, ge=120, le=2**31 - 1)
    mtu: int | None = Field(None, ge=576, le=9000)
    serve_dns: bool = False
    hosts: dict[MacAddress, DhcpHost] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> DhcpSegment:
        nets = [s.cidr for s in self.subnets]
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                if a.version == b.version and a.overlaps(b):
                    raise ValueError(f"subnets {a} and {b} overlap")
        taken: dict[IPAddress, str] = {}
        for s in self.subnets:
            taken[s.server_address] = "the DHCP server"
            if s.gateway is not None:
                taken[s.gateway] = "the gateway"
        for mac, host in sorted(self.hosts.items()):
            for address in (host.ipv4, host.ipv6):
                if address is None:
                    continue
                if not any(_is_host_address(address, n) for n in nets):
                    raise ValueError(f"{mac}: {address} is no host address of a served subnet")
                if address in taken:
                    raise ValueError(f"{mac}: {address} is already {taken[address]}'s")
                taken[address] = mac
        return self


class Underlay(Model):
    """This host's VXLAN tunnel endpoint: ``interface`` (the NIC on the underlay network) is
    put on ``bridge`` and ``address`` (the tunnel IP with its prefix) on the bridge's internal
    port. The address must not stay on ``interface`` itself."""

    interface: InterfaceName
    address: IPvAnyInterface
    bridge: InterfaceName = "br-phy"
    mtu: int | None = Field(None, ge=1280, le=9216, description="mtu_request of the interface")

    @property
    def ip(self) -> str:
        """The tunnel IP (without prefix)."""
        return str(self.address.ip)


class Uplink(Model):
    """The host NIC carrying flat (untagged) and VLAN (802.1Q) segments: a trunk port on
    ``bridge`` (None: the underlay's bridge if it is the underlay's interface, else
    ``br-uplink``)."""

    interface: InterfaceName
    bridge: InterfaceName | None = None


class Segment(Model):
    """One port group present on this host. ``segment_id``: the VLAN id (vlan), the VNI
    (vxlan), None (flat). ``local_tag``: the VLAN tag of the segment on ``br-int`` (chosen by
    the controller, unique on the host). ``remotes``: the tunnel IPs of the other hosts of a
    VXLAN segment."""

    port_group_id: str = Field(min_length=1, max_length=64)
    type: SegmentType
    segment_id: int | None = None
    local_tag: int = Field(ge=1, le=4094)
    remotes: list[IpAddress] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _check(self) -> Self:
        check_segment(self.type, self.segment_id)
        if self.remotes and self.type != SegmentType.vxlan:
            raise ValueError(f"port group {self.port_group_id}: only vxlan segments have remotes")
        if len(set(self.remotes)) != len(self.remotes):
            raise ValueError(f"port group {self.port_group_id}: a remote is listed twice")
        return self


class HostNetwork(Model):
    """Everything a host's segments need. Valid means applicable: unique port groups, local
    tags and segments; an underlay for VXLAN and an uplink for flat/VLAN segments; remotes of
    the underlay's IP version and not this host."""

    bridge: InterfaceName = "br-int"
    underlay: Underlay | None = None
    uplink: Uplink | None = None
    segments: list[Segment] = Field(default_factory=list, max_length=4094)

    @property
    def uplink_bridge(self) -> str | None:
        """The bridge holding the uplink (None without an uplink)."""
        if self.uplink is None:
            return None
        if self.uplink.bridge is not None:
            return self.uplink.bridge
        if self.underlay is not None and self.underlay.interface == self.uplink.interface:
            return self.underlay.bridge
        return "br-uplink"

    @model_validator(mode="after")
    def _check(self) -> Self:
        for what, values in (
            ("port group", [s.port_group_id for s in self.segments]),
            ("local tag", [str(s.local_tag) for s in self.segments]),
            ("segment", [f"{s.type.value} {s.segment_id or ''}".strip() for s in self.segments]),
        ):
            dupes = sorted(v for v, n in Counter(values).items() if n > 1)
            if dupes:
                raise ValueError(f"{what} used twice: {', '.join(dupes)}")
        types = {s.type for s in self.segments}
        if SegmentType.vxlan in types and self.underlay is None:
            raise ValueError("vxlan segments need an underlay")
        if types & {SegmentType.flat, SegmentType.vlan} and self.uplink is None:
            raise ValueError("flat and vlan segments need an uplink")
        self._check_bridges()
        if self.underlay is not None:
            version = self.underlay.address.version
            for s in self.segments:
                for r in s.remotes:
                    if ipaddress.ip_address(r).version != version:
                        raise ValueError(f"remote {r}: not of the underlay's IP version")
                    if r == self.underlay.ip:
                        raise ValueError(f"remote {r} is this host's own tunnel IP")
        return self

    def _check_bridges(self) -> None:
        ul, up = self.underlay, self.uplink
        names = [self.bridge]
        if ul is not None:
            names.append(ul.bridge)
        upb = self.uplink_bridge
        if up is not None and upb is not None:
            shared = ul is not None and ul.interface == up.interface
            if shared and ul is not None and upb != ul.bridge:
                raise ValueError("the uplink is the underlay interface: one bridge holds both")
            if not shared:
                names.append(upb)
        if len(set(names)) != len(names):
            raise ValueError(f"bridges must differ: {', '.join(names)}")
