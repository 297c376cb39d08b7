"""``corral zone``: data centers."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import (
    Limit,
    Name,
    NoWait,
    Offset,
    Sort,
    Tags,
    Where,
    add_show_delete,
    finish,
    state_of,
)
from corral.cli.output import Column, print_page

app = typer.Typer(help="Zones (data centers).", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda z: z.name),
    ("ID", lambda z: z.id),
    ("DESCRIPTION", lambda z: z.description),
    ("CREATED", lambda z: z.created_at),
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    no_wait: NoWait = False,
) -> None:
    """Create a zone."""
    state = state_of(ctx)
    op = state.client().zones.create(name, description=description)
    finish(state, op, no_wait=no_wait, done=f"Zone {name} created ({op.target_id}).")


@app.command("list")
def list_zones(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List zones."""
    state = state_of(ctx)
    page = state.client().zones.list(limit=limit, offset=offset, sort=sort, q=where, tag=tag)
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="zone", collection=lambda c: c.zones)
