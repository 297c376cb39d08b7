"""VM network interfaces (NICs): a VM's ports on port groups, with their addresses, security
groups, default policies, spoofing protection and bandwidth limits.

- A NIC is on one **port group**; it gets one address from each subnet in ``subnets`` (default:
  every subnet of the port group: dual stack when it has an IPv4 and an IPv6 subnet) or the
  static ``ips`` asked for (each in one of the port group's subnets). Its addresses are IPAM
  allocations: returned when the NIC or its VM is deleted.
- **Security groups** in order: evaluation goes group by group, rule by rule, first match wins;
  when nothing matches, the NIC's ``ingress_default`` (``deny``) / ``egress_default``
  (``allow``) applies. Replies of allowed connections always pass (stateful).
- **Spoofing protection** (``spoof_check``, on by default): the VM sends only from its MAC and
  addresses (and its ``allowed_pairs``), ARP/ND only for those, no DHCP server answers or router
  advertisements.
- **Bandwidth**: ``inbound_kbps`` (into the guest) / ``outbound_kbps`` (from it), kbit/s.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from corral.api.common import Model, Ref
from corral.api.networks import Cidr, IpAddress

NicModelName = Literal["virtio", "e1000", "rtl8139"]
Policy = Literal["allow", "deny"]
MAX_NICS = 16
MAX_GROUPS = 16
MAX_PAIRS = 32
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def check_mac(value: str) -> str:
    """A unicast, locally administered MAC address in lower case (``ValueError`` otherwise)."""
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"not a MAC address: {value!r}")
    first = int(mac[:2], 16)
    if first & 1:
        raise ValueError(f"{value!r} is a multicast address")
    if not first & 2:
        raise ValueError(
            f"{value!r} is not locally administered (the first octet's second bit must be set,"
            " e.g. 02:…)"
        )
    return mac


class AllowedPair(Model):
    """More the guest may send as (an appliance: a router, a VRRP address): ``cidr`` from
    ``mac`` (None: the NIC's own MAC)."""

    cidr: Cidr
    mac: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else check_mac(value)


class NicCreate(Model):
    """A NIC to add (with the VM, or hot-plugged into it)."""

    port_group: Ref = Field(description="port group id or name")
    subnets: list[Ref] | None = Field(
        None,
        max_length=8,
        description="get one address from each of these subnets (None: every subnet of the "
        "port group; []: no address)",
    )
    ips: list[IpAddress] = Field(
        default_factory=list,
        max_length=8,
        description="static addresses, each in a subnet of the port group (instead of one "
        "allocated from that subnet)",
    )
    model: NicModelName = "virtio"
    mac: str | None = Field(None, description="default: generated (02:…)")
    security_groups: list[Ref] = Field(
        default_factory=list, max_length=MAX_GROUPS, description="in evaluation order"
    )
    ingress_default: Policy = "deny"
    egress_default: Policy = "allow"
    spoof_check: bool = True
    allowed_pairs: list[AllowedPair] = Field(default_factory=list, max_length=MAX_PAIRS)
    inbound_kbps: int | None = Field(None, ge=8, le=100_000_000)
    outbound_kbps: int | None = Field(None, ge=8, le=100_000_000)

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else check_mac(value)


class NicUpdate(Model):
    """Change a NIC's policy (applied to its host at once; connections the new policy still
    allows survive)."""

    security_groups: list[Ref] | None = Field(None, max_length=MAX_GROUPS)
    ingress_default: Policy | None = None
    egress_default: Policy | None = None
    spoof_check: bool | None = None
    allowed_pairs: list[AllowedPair] | None = Field(None, max_length=MAX_PAIRS)


class Nic(Model):
    id: str
    vm_id: str
    device: int = Field(description="its position among the VM's NICs (0: the first)")
    port_group_id: str
    mac: str
    model: NicModelName
    ips: list[str] = Field(default_factory=list)
    security_groups: list[str] = Field(default_factory=list, description="group ids, in order")
    ingress_default: Policy
    egress_default: Policy
    spoof_check: bool
    allowed_pairs: list[AllowedPair] = Field(default_factory=list)
    inbound_kbps: int | None = None
    outbound_kbps: int | None = None
    port: str = Field(description="its Open vSwitch port (tap) name on the host")
