"""``corral security-group``: security groups and their ordered rules, export and import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli.common import (
    CliState,
    Limit,
    Name,
    NoWait,
    Offset,
    Ref,
    Sort,
    Tags,
    Where,
    add_show_delete,
    finish,
    state_of,
)
from corral.cli.output import Column, console, emit_json, print_detail, print_page, print_table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from corral.api.security_groups import Rule, SecurityGroup
    from corral.sdk import Client

app = typer.Typer(
    help="Security groups: ordered, stateful firewall rules enforced on the VM NICs that have"
    " them (corral vm nic update VM NIC -g GROUP).",
    no_args_is_help=True,
)
rule_app = typer.Typer(help="The rules of a security group.", no_args_is_help=True)
app.add_typer(rule_app, name="rule")

COLUMNS: list[Column] = [
    ("NAME", lambda g: g.name),
    ("ID", lambda g: g.id),
    ("RULES", lambda g: g.rule_count),
    ("INTRA-GROUP", lambda g: g.intra_group),
    ("REVISION", lambda g: g.revision),
    ("DESCRIPTION", lambda g: g.description or None),
]


def ports(rule: Rule) -> str | None:
    """``80``, ``1000-2000``, or None (every port, or a protocol without ports)."""
    if rule.port_min is None:
        return None
    if rule.port_max is None or rule.port_max == rule.port_min:
        return str(rule.port_min)
    return f"{rule.port_min}-{rule.port_max}"


def remote(rule: Rule) -> str:
    """``10.0.0.0/8``, ``group:app`` (the members of a group) or ``any``."""
    if rule.remote_cidr is not None:
        return rule.remote_cidr
    if rule.remote_group is not None:
        return f"group:{rule.remote_group}"
    return "any"


RULE_COLUMNS: list[Column] = [
    ("PRIORITY", lambda r: r.priority),
    ("DIRECTION", lambda r: r.direction),
    ("TYPE", lambda r: "IPv6" if r.ethertype == "ipv6" else "IPv4"),
    ("PROTOCOL", lambda r: r.protocol),
    ("PORTS", ports),
    ("REMOTE", remote),
    ("ACTION", lambda r: r.action),
    ("DESCRIPTION", lambda r: r.description or None),
    ("ID", lambda r: r.id),
]


def _without_rules(group: SecurityGroup) -> BaseModel:
    """The group for a detail view: its rules are shown as a table of their own."""
    from pydantic import Field

    from corral.api.security_groups import Rule as RuleModel
    from corral.api.security_groups import SecurityGroup as Model

    class Summary(Model):
        rules: list[RuleModel] = Field(default_factory=list, exclude=True)

    return Summary.model_validate(group.model_dump())


def print_group(state: CliState, group: SecurityGroup) -> None:
    """The group's fields, then its rules in priority order (JSON: the group as is)."""
    if state.json:
        emit_json(group)
        return
    print_detail(_without_rules(group), json_output=False)
    out = console()
    builtin = "on" if group.intra_group else "off"
    out.print(f"\nBuilt-in rule (members may talk to each other): {builtin}")
    if not group.rules:
        out.print("No rules: other ingress is denied, egress allowed.")
        return
    out.print("Rules (first match wins):")
    print_table(group.rules, RULE_COLUMNS)


@app.command("list")
def list_groups(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List security groups (RULES: how many rules each has)."""
    state = state_of(ctx)
    page = state.client().security_groups.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag
    )
    print_page(page, COLUMNS, json_output=state.json)


Description = Annotated[str | None, typer.Option("--description", "-d", help="What it is for.")]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    description: Description = None,
    intra_group: Annotated[
        bool,
        typer.Option(
            "--intra-group/--no-intra-group", help="Members may talk to each other (built-in)."
        ),
    ] = True,
    no_wait: NoWait = False,
) -> None:
    """Create a security group without rules (add them with `rule add` or `import`)."""
    state = state_of(ctx)
    op = state.client().security_groups.create(
        name, description=description or "", intra_group=intra_group
    )
    finish(state, op, no_wait=no_wait, done=f"Security group {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    description: Description = None,
    intra_group: Annotated[
        bool | None,
        typer.Option(
            "--intra-group/--no-intra-group",
            help="Turn the built-in rule (members talk to each other) on or off.",
            show_default=False,
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Rename a group, describe it, or turn its built-in rule on or off."""
    state = state_of(ctx)
    op = state.client().security_groups.update(
        ref, name=name, description=description, intra_group=intra_group
    )
    finish(state, op, no_wait=no_wait, done=f"Security group {ref} updated.")


add_show_delete(app, noun="security group", collection=lambda c: c.security_groups)
# The shared ``show`` prints fields only: this module's own adds the rules table.
app.registered_commands = [c for c in app.registered_commands if c.name != "show"]


@app.command("show")
def show(ctx: typer.Context, ref: Ref) -> None:
    """Show a security group and its rules in priority order (0 first)."""
    state = state_of(ctx)
    print_group(state, state.client().security_groups.get(ref))


@app.command("export")
def export(
    ctx: typer.Context,
    ref: Ref,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", dir_okay=False, help="Write the JSON there (default: stdout)."
        ),
    ] = None,
) -> None:
    """Export a group's rules as JSON (remote groups by name), for `import`."""
    state = state_of(ctx)
    exported = state.client().security_groups.export(ref)
    text = exported.model_dump_json(indent=2) + "\n"
    if file is None:
        sys.stdout.write(text)
        return
    file.write_text(text)
    typer.echo(f"{len(exported.rules)} rule(s) of {exported.group} written to {file}.", err=True)


def read_rules(path: str) -> Any:
    """The rules of an export file (``-``: stdin): the export itself, or a JSON list of rules."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from exc
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}") from exc
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise typer.BadParameter(f"{path}: expected an export (an object with rules) or a list")
    from corral.api.security_groups import RuleExport

    try:
        return RuleExport.model_validate(doc)
    except ValueError:  # not a complete export: its rules (the server says what is wrong)
        return doc["rules"]


@app.command("import")
def import_rules(
    ctx: typer.Context,
    ref: Ref,
    file: Annotated[
        str, typer.Argument(help="An export (JSON), or a JSON list of rules; - for stdin.")
    ],
    append: Annotated[
        bool, typer.Option("--append", help="Add the rules after the group's own.")
    ] = False,
    intra_group: Annotated[
        bool | None,
        typer.Option(
            "--intra-group/--no-intra-group",
            help="Also set the built-in rule (default: an export's, when replacing).",
            show_default=False,
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Replace a group's rules with those of a file (--append: add them), all or nothing: any
    invalid rule is listed and nothing changes."""
    from corral.api.errors import InvalidInput

    state = state_of(ctx)
    rules = read_rules(file)
    try:
        op = state.client().security_groups.import_rules(
            ref, rules, mode="append" if append else "replace", intra_group=intra_group
        )
    except InvalidInput as exc:
        offending = exc.context.get("rules")
        if not isinstance(offending, list):
            raise
        typer.echo(
            f"Error [invalid_input]: {len(offending)} invalid rule(s), nothing imported:", err=True
        )
        for item in offending:
            typer.echo(f"  rule {item.get('index')}: {item.get('error')}", err=True)
        raise typer.Exit(2) from exc
    verb = "appended to" if append else "imported into"
    finish(state, op, no_wait=no_wait, done=f"{len(_rules_of(rules))} rule(s) {verb} {ref}.")


def _rules_of(rules: Any) -> list[Any]:
    return list(rules.rules) if hasattr(rules, "rules") else list(rules)


GroupArg = Annotated[str, typer.Argument(help="Security group name or id.", show_default=False)]
RuleArg = Annotated[
    str, typer.Argument(help="Rule id, or its priority (a number).", show_default=False)
]


def rule_id(client: Client, group: str, ref: str) -> str:
    """The id of the rule ``ref``: an id, or a priority of the group's rules."""
    if not (ref.isdigit() and len(ref) < 10):
        return ref
    rules = client.security_groups.get(group).rules
    at = int(ref)
    if at >= len(rules):
        raise typer.BadParameter(f"{group} has {len(rules)} rule(s): no priority {at}")
    return rules[at].id


def parse_ports(text: str) -> tuple[int, int | None]:
    """``80`` -> (80, None); ``1000-2000`` -> (1000, 2000)."""
    low, sep, high = text.partition("-")
    try:
        return int(low), (int(high) if sep else None)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: a port (80) or a range (1000-2000)") from None


@rule_app.command("add")
def add_rule(
    ctx: typer.Context,
    group: GroupArg,
    direction: Annotated[
        str, typer.Argument(help="ingress (to the NIC) or egress (from it).", show_default=False)
    ],
    protocol: Annotated[
        str, typer.Option("--protocol", "-p", help="any, tcp, udp, icmp or icmpv6.")
    ] = "any",
    port: Annotated[
        str | None, typer.Option("--port", help="tcp/udp: a port (22) or a range (1000-2000).")
    ] = None,
    ethertype: Annotated[str, typer.Option("--ethertype", "--type", help="ipv4 or ipv6.")] = "ipv4",
    remote_cidr: Annotated[
        str | None, typer.Option("--remote-cidr", help="The other side: this network.")
    ] = None,
    remote_group: Annotated[
        str | None,
        typer.Option("--remote-group", help="The other side: the members of this group."),
    ] = None,
    action: Annotated[str, typer.Option("--action", "-a", help="allow or deny.")] = "allow",
    priority: Annotated[
        int | None,
        typer.Option("--priority", min=0, help="Insert here (0 first); default: last."),
    ] = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Add a rule: last, or at --priority (the rules from there move down one)."""
    state = state_of(ctx)
    port_min, port_max = parse_ports(port) if port is not None else (None, None)
    op = state.client().security_groups.add_rule(
        group,
        direction,
        ethertype=ethertype,
        protocol=protocol,
        port_min=port_min,
        port_max=port_max,
        remote_cidr=remote_cidr,
        remote_group=remote_group,
        action=action,
        description=description or "",
        priority=priority,
    )
    finish(state, op, no_wait=no_wait, done=f"Rule {op.target_id} added to {group}.")


@rule_app.command("move")
def move_rule(
    ctx: typer.Context,
    group: GroupArg,
    rule: RuleArg,
    priority: Annotated[
        int, typer.Argument(min=0, help="Its new priority (0 first).", show_default=False)
    ],
    no_wait: NoWait = False,
) -> None:
    """Move a rule to another priority; the rules between shift by one."""
    state = state_of(ctx)
    client = state.client()
    op = client.security_groups.update_rule(group, rule_id(client, group, rule), priority=priority)
    finish(state, op, no_wait=no_wait, done=f"Rule {rule} of {group} moved to {priority}.")


@rule_app.command("update")
def update_rule(
    ctx: typer.Context,
    group: GroupArg,
    rule: RuleArg,
    action: Annotated[str | None, typer.Option("--action", "-a", help="allow or deny.")] = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Change a rule's action or description."""
    state = state_of(ctx)
    client = state.client()
    op = client.security_groups.update_rule(
        group, rule_id(client, group, rule), action=action, description=description
    )
    finish(state, op, no_wait=no_wait, done=f"Rule {rule} of {group} updated.")


@rule_app.command("delete")
def delete_rule(
    ctx: typer.Context, group: GroupArg, rule: RuleArg, no_wait: NoWait = False
) -> None:
    """Delete a rule; the ones after it move up one. (The built-in rule is not deletable: turn
    it off with `update --no-intra-group`.)"""
    state = state_of(ctx)
    client = state.client()
    op = client.security_groups.delete_rule(group, rule_id(client, group, rule))
    finish(state, op, no_wait=no_wait, done=f"Rule {rule} of {group} deleted.")
