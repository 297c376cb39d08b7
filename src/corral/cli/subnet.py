"""``corral subnet``: subnets (IP pools) of port groups and the addresses held on them."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import (
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
from corral.cli.output import Column, emit_json, print_page, print_table
from corral.cli.port_group import by_ref

app = typer.Typer(help="Subnets: IP pools of port groups (IPv4 and IPv6).", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda s: s.name),
    ("ID", lambda s: s.id),
    ("PORT GROUP", lambda s: s.port_group_id),
    ("CIDR", lambda s: s.cidr),
    ("GATEWAY", lambda s: s.gateway or "-"),
    ("DHCP", lambda s: s.dhcp),
    ("USED", lambda s: s.used),
    ("AVAILABLE", lambda s: s.available),
]

ALLOCATION_COLUMNS: list[Column] = [
    ("ADDRESS", lambda a: a.address),
    ("NIC", lambda a: a.nic_id or "-"),
    ("VM", lambda a: a.vm_id or "-"),
    ("SINCE", lambda a: a.created_at),
]

Description = Annotated[str | None, typer.Option("--description", "-d")]
Dns = Annotated[list[str] | None, typer.Option("--dns", help="DNS server (repeatable).")]
Ranges = Annotated[
    list[str] | None,
    typer.Option("--range", help="FIRST-LAST: an allocation range (repeatable)."),
]
Reserved = Annotated[
    list[str] | None, typer.Option("--reserved", help="An address never handed out (repeatable).")
]
Dhcp = Annotated[bool | None, typer.Option("--dhcp/--no-dhcp", help="Serve addresses by DHCP.")]
Address = Annotated[str, typer.Argument(help="An IP address.", show_default=False)]


def parse_ranges(items: list[str] | None) -> list[tuple[str, str]] | None:
    """``["10.0.0.10-10.0.0.99"]`` -> ``[("10.0.0.10", "10.0.0.99")]``; ``typer.BadParameter``
    on bad text (addresses are checked by the server)."""
    if items is None:
        return None
    out = []
    for item in items:
        start, sep, end = item.partition("-")
        if not sep or not start.strip() or not end.strip():
            raise typer.BadParameter(f"{item!r}: expected FIRST-LAST", param_hint="--range")
        out.append((start.strip(), end.strip()))
    return out


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    port_group: Annotated[str, typer.Option("--port-group", "-p", help="Port group name or id.")],
    cidr: Annotated[str, typer.Option("--cidr", help="10.0.0.0/24, fd00::/64 ...")],
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="Default: the first host address.")
    ] = None,
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="No gateway.")] = False,
    dns: Dns = None,
    ranges: Ranges = None,
    reserved: Reserved = None,
    dhcp: Dhcp = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Create a subnet (ranges default to every host address but the gateway)."""
    state = state_of(ctx)
    op = state.client().subnets.create(
        name,
        port_group=port_group,
        cidr=cidr,
        gateway=gateway,
        no_gateway=no_gateway,
        dns_servers=dns or [],
        ranges=parse_ranges(ranges) or [],
        reserved=reserved or [],
        dhcp=True if dhcp is None else dhcp,
        description=description or "",
    )
    finish(state, op, no_wait=no_wait, done=f"Subnet {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    dns: Dns = None,
    ranges: Ranges = None,
    default_ranges: Annotated[
        bool, typer.Option("--default-ranges", help="Back to every host address but the gateway.")
    ] = False,
    reserved: Reserved = None,
    clear_reserved: Annotated[
        bool, typer.Option("--clear-reserved", help="Reserve no address.")
    ] = False,
    dhcp: Dhcp = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Change a subnet (only the options given; list options replace the whole list)."""
    state = state_of(ctx)
    op = state.client().subnets.update(
        ref,
        name=name,
        description=description,
        dns_servers=dns,
        ranges=[] if default_ranges else parse_ranges(ranges),
        reserved=[] if clear_reserved else reserved,
        dhcp=dhcp,
    )
    finish(state, op, no_wait=no_wait, done=f"Subnet {ref} updated.")


@app.command("list")
def list_subnets(
    ctx: typer.Context,
    port_group: Annotated[
        str | None, typer.Option("--port-group", "-p", help="Only this port group.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List subnets with their used and available addresses."""
    state = state_of(ctx)
    page = state.client().subnets.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, **by_ref("port_group", port_group)
    )
    print_page(page, COLUMNS, json_output=state.json)


@app.command("allocations")
def allocations(ctx: typer.Context, ref: Ref) -> None:
    """The allocated addresses of a subnet, in address order."""
    state = state_of(ctx)
    found = state.client().subnets.allocations(ref)
    if state.json:
        emit_json(found)
    else:
        print_table(found, ALLOCATION_COLUMNS)


@app.command("hold")
def hold(
    ctx: typer.Context,
    ref: Ref,
    address: Annotated[
        str | None,
        typer.Argument(
            help="The address to hold (default: the lowest free one).", show_default=False
        ),
    ] = None,
) -> None:
    """Hold an address of the subnet for later use; prints the address."""
    state = state_of(ctx)
    held = state.client().subnets.hold(ref, address)
    if state.json:
        emit_json(held)
    else:
        typer.echo(held.address)


@app.command("release")
def release(ctx: typer.Context, ref: Ref, address: Address, no_wait: NoWait = False) -> None:
    """Release a held address (one used by a NIC goes with the NIC)."""
    state = state_of(ctx)
    op = state.client().subnets.release(ref, address)
    finish(state, op, no_wait=no_wait, done=f"Released {address} of {ref}.")


add_show_delete(app, noun="subnet", collection=lambda c: c.subnets)
