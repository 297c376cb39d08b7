"""``corral port-group``: the L2 segments of switches (flat, VLAN, VXLAN)."""

from __future__ import annotations

import re
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
from corral.cli.output import Column, print_page

app = typer.Typer(
    help="Port groups: the L2 segments (flat, VLAN, VXLAN) of switches.", no_args_is_help=True
)

COLUMNS: list[Column] = [
    ("NAME", lambda p: p.name),
    ("ID", lambda p: p.id),
    ("SWITCH", lambda p: p.switch_id),
    ("TYPE", lambda p: p.type),
    ("SEGMENT", lambda p: "-" if p.segment_id is None else p.segment_id),
    ("MTU", lambda p: p.mtu),
]

Description = Annotated[str | None, typer.Option("--description", "-d")]
_ID = re.compile(r"^[0-9a-f]{32}$")


def by_ref(relation: str, ref: str | None) -> dict[str, str]:
    """The list filter selecting items of the related resource ``ref`` (an id: ``<relation>_id``,
    else its name: ``<relation>``), readable by callers who may not read that resource."""
    if ref is None:
        return {}
    return {f"{relation}_id": ref} if _ID.match(ref) else {relation: ref}


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    switch: Annotated[str, typer.Option("--switch", "-s", help="Switch name or id.")],
    segment_type: Annotated[
        str, typer.Option("--type", "-t", help="flat, vlan or vxlan.", show_default=False)
    ],
    segment_id: Annotated[
        int | None,
        typer.Option("--segment-id", "--vlan", "--vni", help="VLAN id (1-4094) or VNI."),
    ] = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Create a port group: one flat per switch, a VLAN id once per switch, a VNI once."""
    state = state_of(ctx)
    op = state.client().port_groups.create(
        name,
        switch=switch,
        type=segment_type,
        segment_id=segment_id,
        description=description or "",
    )
    finish(state, op, no_wait=no_wait, done=f"Port group {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Rename or describe a port group (its segment never changes)."""
    state = state_of(ctx)
    op = state.client().port_groups.update(ref, name=name, description=description)
    finish(state, op, no_wait=no_wait, done=f"Port group {ref} updated.")


@app.command("list")
def list_port_groups(
    ctx: typer.Context,
    switch: Annotated[str | None, typer.Option("--switch", "-s", help="Only this switch.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List port groups."""
    state = state_of(ctx)
    page = state.client().port_groups.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, **by_ref("switch", switch)
    )
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="port group", collection=lambda c: c.port_groups)
