"""Compile a VM NIC's security policy into Open vSwitch flows (pure: no I/O, no database).

The server is the network's controller: it computes each host's flows and the host agent loads
them (``ovs-ofctl add-flows``, idempotently replacing the port's cookie). This module computes the
flows of one NIC ("port") on the integration bridge; every flow carries the port's ``cookie`` so
that the agent can replace exactly a port's flows.

Pipeline (tables):

- ``0`` admission. From the VM's port: anti-spoofing — only its MAC, its addresses (and allowed
  address pairs), ARP/ND for them, DHCP/DHCPv6 client requests; DHCP server answers and router
  advertisements from a guest are dropped — then IP traffic goes through conntrack in the port's
  zone to table ``1``. Everything else from the port is dropped.
- ``1`` egress policy of the port (``in_port``): invalid dropped, established/related passed,
  new connections matched against the rules (groups in order, rules in order, first match
  wins, else the NIC's egress default); allowed ones are committed and go to table ``3``.
- ``3`` delivery: IP traffic to a local VM's MAC from the VM's own segment (``reg1``: the
  segment's local VLAN tag, set in table ``0`` from the input port) is sent through conntrack
  in that port's zone to table ``2`` with the zone in ``reg0``; IP traffic to that MAC from
  another segment is dropped; anything else is switched normally (``NORMAL``, which keeps
  VLAN tags apart). Traffic arriving from tunnels and patch ports enters table ``0`` marked
  with their segment and goes to ``3``.
- ``2`` ingress policy of the port (``reg0`` = its zone), as ``1`` with the ingress rules and
  default; allowed packets are output to the port.

First match wins across a NIC's groups: the rules are numbered in that order (the group's
built-in intra-group rule first within its group) and get descending OpenFlow priorities. A rule
with a remote group matches its members' addresses (the caller resolves them); a port range is
split into the fewest value/mask pairs. ICMP rules match the protocol only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

T_ADMIT, T_EGRESS, T_INGRESS, T_DELIVER = 0, 1, 2, 3
RULE_TOP = 60000
"""The OpenFlow priority of a NIC's first rule; the next ones count down from there."""
MAX_RULE_FLOWS = RULE_TOP - 1000
FAMILY = {"ipv4": "ip", "ipv6": "ipv6"}
PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}


@dataclass(frozen=True)
class FwRule:
    """One rule as the compiler needs it. ``remotes``: the remote side's networks (a remote
    group's member addresses, or the rule's CIDR); None: anywhere."""

    direction: str  # ingress | egress
    ethertype: str = "ipv4"
    protocol: str = "any"
    port_min: int | None = None
    port_max: int | None = None
    remotes: tuple[str, ...] | None = None
    action: str = "allow"


@dataclass(frozen=True)
class FwGroup:
    """A security group on a NIC: its rules in priority order; ``intra_group`` allows
    traffic from/to its ``members`` (their addresses) before the rules."""

    rules: tuple[FwRule, ...] = ()
    intra_group: bool = True
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class FwPort:
    """A VM NIC on the integration bridge: its OpenFlow port (number, or name: ``ovs-ofctl``
    resolves names when the flows are loaded, so the controller needs no port numbers), MAC,
    its addresses, the conntrack ``zone`` (unique per NIC on the host; also the NIC's mark in
    ``reg0`` between delivery and its ingress policy), the flows' ``cookie``, its groups in order, default policies, and
    anti-spoofing (``spoof_check``; ``allowed_pairs``: more (mac, cidr) the guest may send as)."""

    ofport: int | str
    mac: str
    ips: tuple[str, ...]
    zone: int
    cookie: int
    groups: tuple[FwGroup, ...] = ()
    ingress_default: str = "deny"
    egress_default: str = "allow"
    spoof_check: bool = True
    allowed_pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    tag: int = 0
    """The local VLAN tag of the NIC's segment on the bridge (0: untagged). IP traffic reaches
    the NIC only from its own segment (``reg1`` carries the source's segment)."""
    outbound_meter: int | None = None
    """An OpenFlow meter (created on the bridge by whoever loads the flows) every packet the
    guest sends goes through (its outbound bandwidth limit); None: unlimited."""
    inbound_meter: int | None = None
    """The same for what its ingress policy lets in (DHCP and neighbour discovery bypass it)."""


def port_masks(low: int, high: int) -> list[tuple[int, int]]:
    """The fewest (value, mask) pairs whose matches are exactly the ports ``low``..``high``."""
    out: list[tuple[int, int]] = []
    while low <= high:
        size = low & -low if low else 1 << 16
        while size > high - low + 1:
            size >>= 1
        out.append((low, 0xFFFF & ~(size - 1)))
        low += size
    return out


def _split(ips: Iterable[str]) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for ip in ips:
        (v6 if ":" in ip else v4).append(ip)
    return v4, v6


def _flow(port: FwPort, table: int, priority: int, match: str, actions: str) -> str:
    match = f",{match}" if match else ""
    return f"cookie={port.cookie:#x},table={table},priority={priority}{match},actions={actions}"


def _admission(port: FwPort) -> list[str]:
    """Table 0 for the port: anti-spoofing and into conntrack (egress), else drop."""
    p, mac, z = port.ofport, port.mac, port.zone
    to_ct = f"load:{port.tag}->NXM_NX_REG1[],ct(table={T_EGRESS},zone={z})"
    flows = [
        # a guest never answers DHCP or advertises routes
        _flow(port, T_ADMIT, 300, f"in_port={p},udp,tp_src=67", "drop"),
        _flow(port, T_ADMIT, 300, f"in_port={p},udp6,tp_src=547", "drop"),
        _flow(port, T_ADMIT, 300, f"in_port={p},icmp6,icmp_type=134", "drop"),
        # DHCP clients (no address yet)
        _flow(port, T_ADMIT, 250, f"in_port={p},dl_src={mac},udp,tp_src=68,tp_dst=67", "NORMAL"),
        _flow(port, T_ADMIT, 250, f"in_port={p},dl_src={mac},udp6,tp_src=546,tp_dst=547", "NORMAL"),
        _flow(port, T_ADMIT, 10, f"in_port={p}", "drop"),
    ]
    if not port.spoof_check:
        flows += [
            _flow(port, T_ADMIT, 200, f"in_port={p},ip", to_ct),
            _flow(port, T_ADMIT, 200, f"in_port={p},ipv6", to_ct),
            _flow(port, T_ADMIT, 200, f"in_port={p},arp", "NORMAL"),
        ]
        return flows
    pairs = [(mac, ip) for ip in port.ips] + list(port.allowed_pairs)
    for src_mac, net in pairs:
        if ":" in net.split("/")[0]:
            flows += [
                _flow(
                    port, T_ADMIT, 200, f"in_port={p},dl_src={src_mac},ipv6,ipv6_src={net}", to_ct
                ),
                _flow(
                    port,
                    T_ADMIT,
                    210,
                    f"in_port={p},dl_src={src_mac},icmp6,icmp_type=136,nd_target={net}",
                    "NORMAL",
                ),
            ]
        else:
            flows += [
                _flow(port, T_ADMIT, 200, f"in_port={p},dl_src={src_mac},ip,nw_src={net}", to_ct),
                _flow(
                    port,
                    T_ADMIT,
                    200,
                    f"in_port={p},dl_src={src_mac},arp,arp_spa={net},arp_sha={src_mac}",
                    "NORMAL",
                ),
            ]
    # neighbour solicitations and the link-local address IPv6 needs before any other
    flows += [
        _flow(port, T_ADMIT, 205, f"in_port={p},dl_src={mac},icmp6,icmp_type=135", "NORMAL"),
        _flow(port, T_ADMIT, 205, f"in_port={p},dl_src={mac},icmp6,icmp_type=133", "NORMAL"),
    ]
    return flows


_INFRA_INGRESS = (
    "udp,tp_src=67,tp_dst=68",  # DHCP server answers
    "udp6,tp_src=547,tp_dst=546",  # DHCPv6 server answers
    "icmp6,icmp_type=134",  # router advertisements
    "icmp6,icmp_type=135",  # neighbour solicitations
    "icmp6,icmp_type=136",  # neighbour advertisements
)
"""What reaches a NIC from its own segment whatever its ingress policy: the protocols that give
a guest its address and its neighbours (none of them can come from another guest: admission
drops guests' DHCP answers and RAs, and their NAs for addresses not theirs)."""


def _delivery(port: FwPort) -> list[str]:
    """Table 3 for the port: IP traffic of its segment to its MAC through conntrack in its zone
    to table 2, but DHCP answers and neighbour discovery straight to the port; IP traffic to its
    MAC from anywhere else dropped (not switched around the policy)."""
    load = f"load:{port.zone}->NXM_NX_REG0[]"
    ct = f"ct(table={T_INGRESS},zone={port.zone})"
    seg = f"reg1={port.tag}"
    infra = [
        _flow(port, T_DELIVER, 110, f"{seg},dl_dst={port.mac},{m}", f"output:{port.ofport}")
        for m in _INFRA_INGRESS
    ]
    return infra + [
        flow
        for fam in ("ip", "ipv6")
        for flow in (
            _flow(port, T_DELIVER, 100, f"{seg},dl_dst={port.mac},{fam}", f"{load},{ct}"),
            _flow(port, T_DELIVER, 90, f"dl_dst={port.mac},{fam}", "drop"),
        )
    ]


def _state(port: FwPort, table: int, key: str) -> list[str]:
    """Conntrack verdicts that come before the rules: invalid dropped, replies passed."""
    deliver = f"resubmit(,{T_DELIVER})" if table == T_EGRESS else f"output:{port.ofport}"
    return [
        _flow(port, table, 65000, f"{key},ct_state=+trk+inv", "drop"),
        _flow(port, table, 64000, f"{key},ct_state=+trk+est-new", deliver),
        _flow(port, table, 64000, f"{key},ct_state=+trk+rel-new", deliver),
    ]


def _matches(rule: FwRule, remote_field: str) -> list[str]:
    """The match strings of one rule (one per remote network x port mask)."""
    fam = FAMILY[rule.ethertype]
    base = [fam] if rule.protocol == "any" else [f"{fam},nw_proto={PROTO[rule.protocol]}"]
    if rule.protocol in ("tcp", "udp") and rule.port_min is not None:
        high = rule.port_max if rule.port_max is not None else rule.port_min
        masks = port_masks(rule.port_min, high)
        base = [
            f"{b},tp_dst={v:#x}/{m:#x}" if m != 0xFFFF else f"{b},tp_dst={v}"
            for b in base
            for v, m in masks
        ]
    if rule.remotes is None:
        return base
    v4, v6 = _split(rule.remotes)
    nets = v6 if rule.ethertype == "ipv6" else v4
    field = remote_field if rule.ethertype == "ipv4" else remote_field.replace("nw_", "ipv6_")
    return [f"{b},{field}={net}" for b in base for net in nets]


def _rules(port: FwPort, direction: str) -> list[FwRule]:
    """The port's rules of ``direction`` in evaluation order (intra-group rule first in its
    group)."""
    out: list[FwRule] = []
    for group in port.groups:
        if group.intra_group and group.members:
            for fam in ("ipv4", "ipv6"):
                v4, v6 = _split(group.members)
                members = tuple(v4 if fam == "ipv4" else v6)
                if members:
                    out.append(FwRule(direction, fam, remotes=members))
        out.extend(r for r in group.rules if r.direction == direction)
    return out


def _policy(port: FwPort, direction: str) -> list[str]:
    egress = direction == "egress"
    table = T_EGRESS if egress else T_INGRESS
    key = f"in_port={port.ofport}" if egress else f"reg0={port.zone}"
    remote = "nw_dst" if egress else "nw_src"
    deliver = f"resubmit(,{T_DELIVER})" if egress else f"output:{port.ofport}"
    allow = f"ct(commit,zone={port.zone}),{deliver}"
    flows = _state(port, table, key)
    priority = RULE_TOP
    for rule in _rules(port, direction):
        verdict = allow if rule.action == "allow" else "drop"
        for match in _matches(rule, remote):
            flows.append(_flow(port, table, priority, f"{key},ct_state=+trk+new,{match}", verdict))
        priority -= 1
        if priority < RULE_TOP - MAX_RULE_FLOWS:
            raise ValueError(f"port {port.ofport}: more rules than flow priorities")
    default = port.egress_default if egress else port.ingress_default
    for fam in ("ip", "ipv6"):  # conntrack actions need the L3 protocol in the match
        flows.append(
            _flow(port, table, 10, f"{key},{fam}", allow if default == "allow" else "drop")
        )
    return flows


def _metered(flows: list[str], meter: int | None) -> list[str]:
    """``flows`` whose actions do not drop, with the meter applied first (``meter:N``)."""
    if meter is None:
        return flows
    return [f if f.endswith("actions=drop") else f.replace("actions=", f"actions=meter:{meter},", 1)
            for f in flows]  # fmt: skip


def compile_port(port: FwPort) -> list[str]:
    """Every flow of ``port`` (``ovs-ofctl add-flows`` lines), deterministic for equal input.
    With meters, everything admitted from the port goes through ``outbound_meter`` and
    everything its ingress policy outputs through ``inbound_meter``."""
    for ip in port.ips:
        ipaddress.ip_address(ip)  # ValueError for a bad address, before any flow
    return [
        *_metered(_admission(port), port.outbound_meter),
        *_delivery(port),
        *_policy(port, "egress"),
        *_metered(_policy(port, "ingress"), port.inbound_meter),
    ]


def bridge_base(trunks: Mapping[int | str, int] | None = None, cookie: int = 0) -> list[str]:
    """The flows every integration bridge has besides its NICs': traffic from the ``trunks``
    (tunnel and patch ports, each with the local tag of the segment it carries) goes to
    delivery marked with that segment (``reg1``); from any other port, unmarked (segment 0);
    delivery switches what is not for a local NIC."""
    base = FwPort(ofport=0, mac="", ips=(), zone=0, cookie=cookie)
    flows = [
        _flow(
            base, T_ADMIT, 5, f"in_port={port}", f"load:{tag}->NXM_NX_REG1[],resubmit(,{T_DELIVER})"
        )
        for port, tag in sorted((trunks or {}).items(), key=lambda kv: str(kv[0]))
    ]
    return [
        *flows,
        _flow(base, T_ADMIT, 1, "", f"load:0->NXM_NX_REG1[],resubmit(,{T_DELIVER})"),
        _flow(base, T_DELIVER, 1, "", "NORMAL"),
    ]


def compile_ports(
    ports: Sequence[FwPort], trunks: Mapping[int | str, int] | None = None
) -> list[str]:
    """The flows of a host's bridge: the base flows (``trunks``: see ``bridge_base``) and
    every NIC's."""
    flows = bridge_base(trunks)
    for port in ports:
        flows.extend(compile_port(port))
    return flows
