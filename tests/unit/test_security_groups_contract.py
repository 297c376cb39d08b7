"""The security group contract's pure parts: rule checks, rule identity, offending rules listed by
index; and how the CLI reads and shows ports and remotes."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from pydantic import ValidationError

from corral.api.security_groups import (
    MAX_RULES,
    Rule,
    RuleExport,
    RuleImport,
    RuleSpec,
    rule_errors,
    rule_key,
)
from corral.cli.security_group import parse_ports, ports, remote


def test_rule_defaults_and_canonical_cidr() -> None:
    r = RuleSpec.model_validate({"direction": "egress", "remote_cidr": "fd00:0::/64",
                                 "ethertype": "ipv6"})  # fmt: skip
    assert (r.protocol, r.action, r.remote_cidr) == ("any", "allow", "fd00::/64")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"protocol": "icmp", "port_min": 1}, "ports only go with tcp or udp"),
        ({"protocol": "udp", "port_max": 5}, "port_max needs port_min"),
        ({"protocol": "tcp", "port_min": 5, "port_max": 4}, "port_max is below port_min"),
        ({"protocol": "icmp", "ethertype": "ipv6"}, "icmp is IPv4"),
        ({"protocol": "icmpv6"}, "icmpv6 is IPv6"),
        ({"remote_cidr": "::/0"}, "address family"),
        ({"remote_cidr": "10.0.0.0/8", "remote_group": "g"}, "not both"),
    ],
)
def test_inconsistent_rules_are_refused(body: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        RuleSpec.model_validate({"direction": "ingress", **body})


def test_rule_key_ignores_the_description_and_reads_one_port_as_a_range() -> None:
    one = RuleSpec(direction="ingress", protocol="tcp", port_min=80, description="web")
    same = RuleSpec(direction="ingress", protocol="tcp", port_min=80, port_max=80)
    assert rule_key(one) == rule_key(same)
    deny = RuleSpec(direction="ingress", protocol="tcp", port_min=80, action="deny")
    assert rule_key(deny) != rule_key(one)
    by_name = RuleSpec(direction="ingress", remote_group="app")
    assert rule_key(by_name, "id1") != rule_key(by_name, "id2")
    assert rule_key(by_name, "id1")[6] == "id1" and rule_key(by_name)[6] == "app"


def test_offending_rules_are_listed_by_index() -> None:
    body = {
        "rules": [
            {"direction": "ingress"},
            {"direction": "ingress", "protocol": "icmp", "port_min": 1},
            {"direction": "up", "colour": 1},
        ],
        "mode": "merge",
    }
    with pytest.raises(ValidationError) as exc:
        RuleImport.model_validate(body)
    assert rule_errors(exc.value.errors()) == [
        {"index": 1, "error": "ports only go with tcp or udp"},
        {"index": 2, "error": "direction: Input should be 'ingress' or 'egress'; colour: Extra "
                              "inputs are not permitted"},
    ]  # fmt: skip
    # request locations start with "body"; errors elsewhere are no rule's
    raw = [{"loc": ("body", "rules", 4, "port_min"), "msg": "too big"},
           {"loc": ("body", "mode"), "msg": "bad"}, {"loc": ("body", "rules"), "msg": "long"}]  # fmt: skip
    assert rule_errors(raw) == [{"index": 4, "error": "port_min: too big"}]
    too_many = {"rules": [{"direction": "ingress"}] * (MAX_RULES + 1)}
    with pytest.raises(ValidationError) as exc:
        RuleImport.model_validate(too_many)
    assert rule_errors(exc.value.errors()) == []


def test_an_export_is_an_import() -> None:
    export = RuleExport(group="web", intra_group=False, rules=[RuleSpec(direction="ingress")])
    imported = RuleImport.model_validate(export.model_dump())
    assert (imported.mode, imported.intra_group, imported.rules) == (
        "replace", False, export.rules)  # fmt: skip
    with pytest.raises(ValidationError):
        RuleImport.model_validate({**export.model_dump(), "version": 2})


def _rule(**fields: Any) -> Rule:
    return Rule(id="r", group_id="g", priority=0, direction="ingress", **fields)


def test_cli_ports_and_remote() -> None:
    assert parse_ports("80") == (80, None) and parse_ports("1000-2000") == (1000, 2000)
    for bad in ("x", "1-", "a-b"):
        with pytest.raises(typer.BadParameter):
            parse_ports(bad)
    assert ports(_rule()) is None
    assert ports(_rule(protocol="tcp", port_min=22, port_max=22)) == "22"
    assert ports(_rule(protocol="udp", port_min=5, port_max=6)) == "5-6"
    assert remote(_rule()) == "any"
    assert remote(_rule(remote_cidr="10.0.0.0/8")) == "10.0.0.0/8"
    assert remote(_rule(remote_group="app", remote_group_id="x")) == "group:app"
