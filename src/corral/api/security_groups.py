"""Security groups: a distributed, stateful firewall on each VM NIC.

A group holds ordered rules. Each rule matches a direction (``ingress``: traffic to the NIC;
``egress``: from it), an address family, a protocol with an optional port range (tcp, udp) or
type (icmp), and the remote side (a CIDR, or the NICs of a security group), and allows or
denies. Priorities are consecutive and unique per group, 0 first: a new rule goes last unless a
``priority`` is given, which shifts the rules from there on down; deleting one closes the gap.

A NIC has several groups, in order; a packet is matched group by group, rule by rule, and the
first match decides; with no match the NIC's default policy for that direction applies. Members
of a group may talk to each other (``intra_group``: a built-in rule that can be disabled, not
deleted). The firewall is stateful: replies to allowed connections pass.

Export gives a group's rules as JSON; import replaces (or appends to) another group's rules
after checking all of them: an import is all or nothing, its errors list the offending rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from corral.api.common import Model, Name, OwnedResource, Ref
from corral.api.networks import Cidr

MAX_RULES = 1000


class Direction(StrEnum):
    ingress = "ingress"
    egress = "egress"


class EtherType(StrEnum):
    ipv4 = "ipv4"
    ipv6 = "ipv6"


class Protocol(StrEnum):
    any = "any"
    tcp = "tcp"
    udp = "udp"
    icmp = "icmp"
    icmpv6 = "icmpv6"


class Action(StrEnum):
    allow = "allow"
    deny = "deny"


PORT_PROTOCOLS = frozenset({Protocol.tcp, Protocol.udp})


class RuleSpec(Model):
    """What a rule matches and does (also the export format). Ports only for tcp/udp
    (``port_min`` alone: that one port); ``icmp``/``icmpv6`` only with their family; at most one
    of ``remote_cidr`` and ``remote_group`` (neither: anywhere), of the rule's family."""

    direction: Direction
    ethertype: EtherType = EtherType.ipv4
    protocol: Protocol = Protocol.any
    port_min: int | None = Field(None, ge=1, le=65535)
    port_max: int | None = Field(None, ge=1, le=65535)
    remote_cidr: Cidr | None = None
    remote_group: Ref | None = Field(None, description="security group id or name")
    action: Action = Action.allow
    description: str = Field("", max_length=255)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ports = self.port_min is not None or self.port_max is not None
        if ports and self.protocol not in PORT_PROTOCOLS:
            raise ValueError("ports only go with tcp or udp")
        if self.port_max is not None and self.port_min is None:
            raise ValueError("port_max needs port_min")
        low, high = self.port_min, self.port_max
        if low is not None and high is not None and high < low:
            raise ValueError("port_max is below port_min")
        if self.protocol == Protocol.icmp and self.ethertype != EtherType.ipv4:
            raise ValueError("icmp is IPv4: use icmpv6 with ipv6")
        if self.protocol == Protocol.icmpv6 and self.ethertype != EtherType.ipv6:
            raise ValueError("icmpv6 is IPv6: use icmp with ipv4")
        if self.remote_cidr is not None and self.remote_group is not None:
            raise ValueError("give remote_cidr or remote_group, not both")
        if self.remote_cidr is not None:
            v6 = ":" in self.remote_cidr
            if v6 != (self.ethertype == EtherType.ipv6):
                raise ValueError("remote_cidr is not of the rule's address family")
        return self


RuleKey = tuple[str, str, str, int | None, int | None, str | None, str | None, str]
"""What makes two rules the same rule (``rule_key``)."""


def rule_key(rule: RuleSpec, remote_group_id: str | None = None) -> RuleKey:
    """The identity of a rule: what it matches and does (``description`` aside; ``port_min``
    alone is that one port; the remote group by id when known, else by reference). Two rules
    of one group with the same key are duplicates."""
    port_max = rule.port_max if rule.port_max is not None else rule.port_min
    remote = remote_group_id if remote_group_id is not None else rule.remote_group
    return (
        rule.direction.value,
        rule.ethertype.value,
        rule.protocol.value,
        rule.port_min,
        port_max,
        rule.remote_cidr,
        remote,
        rule.action.value,
    )


class Rule(RuleSpec):
    id: str
    group_id: str
    priority: int = Field(description="0 first; consecutive within the group")
    remote_group_id: str | None = Field(
        None, description="the remote group's id (``remote_group`` is its name)"
    )


class RuleCreate(RuleSpec):
    priority: int | None = Field(
        None, ge=0, description="insert at this place (the rules from there move down); None: last"
    )


class RuleUpdate(Model):
    """Change a rule in place (fields given) and/or move it to ``priority``."""

    priority: int | None = Field(None, ge=0)
    action: Action | None = None
    description: str | None = Field(None, max_length=255)


class SecurityGroup(OwnedResource):
    description: str = ""
    intra_group: bool = Field(description="members may talk to each other (built-in rule)")
    revision: int = Field(
        0, description="grows with every change of the group's rules or intra_group"
    )
    rule_count: int = Field(0, description="how many rules the group has")
    rules: list[Rule] = Field(
        default_factory=list,
        description="in priority order; only in GET /security-groups/{ref} (lists leave it "
        "empty: see rule_count)",
    )


class SecurityGroupCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)
    intra_group: bool = True
    rules: list[RuleSpec] = Field(default_factory=list, max_length=MAX_RULES)


class SecurityGroupUpdate(Model):
    name: Name | None = None
    description: str | None = Field(None, max_length=1024)
    intra_group: bool | None = None


class RuleExport(Model):
    """A group's rules as exported (``GET /security-groups/{ref}/export``), importable."""

    version: int = 1
    group: str = Field(description="the exported group's name")
    intra_group: bool
    rules: list[RuleSpec]


class RuleImport(Model):
    """Rules to import (``POST /security-groups/{ref}/import``): ``replace`` the group's rules
    or ``append`` them after its own. An export (``RuleExport``) is a valid import as is: its
    ``version`` and ``group`` are informational."""

    rules: list[RuleSpec] = Field(max_length=MAX_RULES)
    mode: Literal["replace", "append"] = "replace"
    intra_group: bool | None = Field(None, description="also set the built-in rule (None: keep)")
    version: int = Field(1, ge=1, le=1, description="the export format (1)")
    group: str | None = Field(None, max_length=63, description="the exported group (ignored)")


def rule_errors(errors: Iterable[Mapping[str, Any]], field: str = "rules") -> list[dict[str, Any]]:
    """``[{index, error}]``: the offending rules of a request body from pydantic's ``errors()``
    (locations ``[body,] rules, <index>, ...``), one entry per rule in index order, its
    problems joined with ``; ``."""
    found: dict[int, list[str]] = {}
    for e in errors:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        if len(loc) < 2 or loc[0] != field or not isinstance(loc[1], int):
            continue
        where = ".".join(str(p) for p in loc[2:])
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        found.setdefault(loc[1], []).append(f"{where}: {msg}" if where else msg)
    return [{"index": i, "error": "; ".join(found[i])} for i in sorted(found)]
