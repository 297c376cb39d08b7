"""Security groups (``client.security_groups``): groups, their ordered rules, export and import."""

# Generated from corral/sdk/_async/security_groups.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from corral.api.errors import InvalidInput
from corral.api.security_groups import (
    RuleCreate,
    RuleExport,
    RuleImport,
    RuleSpec,
    RuleUpdate,
    SecurityGroup,
    SecurityGroupCreate,
    SecurityGroupUpdate,
    rule_errors,
)
from corral.sdk._base import build, parse, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client

RuleLike = RuleSpec | Mapping[str, Any]
"""A rule: a ``RuleSpec`` or a mapping of its fields (``{"direction": "ingress", ...}``)."""


class SecurityGroups(Collection[SecurityGroup]):
    """``client.security_groups``: a distributed, stateful firewall for VM NICs, enforced by
    every host on the NICs that have the group (``client.vm_nics``).

    A group's rules have priorities 0..n-1, 0 first; adding at a priority shifts the rules from
    there down, deleting closes the gap. ``intra_group`` is the built-in rule letting members
    talk to each other (it can be turned off, not deleted). ``get`` returns the rules in
    priority order (``list`` only their ``rule_count``). Failures listing offending rules carry
    ``context["rules"]``: ``[{"index": i, "error": "..."}]``."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/security-groups", SecurityGroup)

    def create(
        self,
        name: str,
        *,
        description: str = "",
        intra_group: bool = True,
        rules: Sequence[RuleLike] = (),
    ) -> Operation:
        """A group in your project with ``rules`` at priorities 0..n-1 (a rule may name the new
        group itself as ``remote_group``)."""
        body = _checked(
            SecurityGroupCreate,
            name=name,
            description=description,
            intra_group=intra_group,
            rules=list(rules),
        )
        return self._client.operation("POST", self._path, body=body)

    def update(
        self,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        intra_group: bool | None = None,
    ) -> Operation:
        """Rename, describe, turn the built-in intra-group rule on or off (``None``: unchanged)."""
        body = build(
            SecurityGroupUpdate, name=name, description=description, intra_group=intra_group
        )
        return self._client.operation("PATCH", self._item(ref), body=body)

    def add_rule(
        self,
        group: str,
        direction: str,
        *,
        ethertype: str = "ipv4",
        protocol: str = "any",
        port_min: int | None = None,
        port_max: int | None = None,
        remote_cidr: str | None = None,
        remote_group: str | None = None,
        action: str = "allow",
        description: str = "",
        priority: int | None = None,
    ) -> Operation:
        """Add a rule to ``group`` (id or name): last, or at ``priority`` (the rules from there
        move down by one). The operation's ``target_id`` is the new rule's id."""
        body = build(
            RuleCreate,
            direction=direction,
            ethertype=ethertype,
            protocol=protocol,
            port_min=port_min,
            port_max=port_max,
            remote_cidr=remote_cidr,
            remote_group=remote_group,
            action=action,
            description=description,
            priority=priority,
        )
        return self._client.operation("POST", f"{self._item(group)}/rules", body=body)

    def update_rule(
        self,
        group: str,
        rule_id: str,
        *,
        priority: int | None = None,
        action: str | None = None,
        description: str | None = None,
    ) -> Operation:
        """Move a rule to ``priority`` (the ones between shift by one) and/or change its action
        or description (``None``: unchanged)."""
        body = build(RuleUpdate, priority=priority, action=action, description=description)
        return self._client.operation("PATCH", self._rule(group, rule_id), body=body)

    def delete_rule(self, group: str, rule_id: str) -> Operation:
        """Delete a rule; the ones after it move up by one."""
        return self._client.operation("DELETE", self._rule(group, rule_id))

    def export(self, group: str) -> RuleExport:
        """The group's rules in priority order, remote groups by name (for ``import_rules``)."""
        response = self._client.request("GET", f"{self._item(group)}/export")
        return parse(RuleExport, response.content)

    def import_rules(
        self,
        group: str,
        rules: RuleExport | Sequence[RuleLike],
        *,
        mode: Literal["replace", "append"] = "replace",
        intra_group: bool | None = None,
    ) -> Operation:
        """Replace the group's rules with ``rules`` (``mode="append"``: add them after its own),
        all or nothing. ``rules`` may be an export: replacing then also copies its
        ``intra_group`` unless ``intra_group`` is given. ``InvalidInput`` with
        ``context["rules"]`` listing every offending rule changes nothing."""
        if isinstance(rules, RuleExport):
            if intra_group is None and mode == "replace":
                intra_group = rules.intra_group
            rules = rules.rules
        body = _checked(RuleImport, rules=list(rules), mode=mode, intra_group=intra_group)
        return self._client.operation("POST", f"{self._item(group)}/import", body=body)

    def _item(self, ref: str) -> str:
        return f"{self._path}/{quote_ref(ref)}"

    def _rule(self, group: str, rule_id: str) -> str:
        return f"{self._item(group)}/rules/{quote_ref(rule_id)}"


def _checked(model: type[SecurityGroupCreate | RuleImport], **fields: Any) -> Any:
    """``build`` for a body with ``rules``: ``InvalidInput`` lists the offending ones in
    ``context["rules"]`` as the server does."""
    try:
        return model(**fields)
    except ValidationError as exc:
        offending = rule_errors(exc.errors())
        if not offending:
            return build(model, **fields)  # raises its InvalidInput
        first = offending[0]
        raise InvalidInput(
            f"{len(offending)} invalid rule(s); rule {first['index']}: {first['error']}",
            rules=offending,
        ) from exc
