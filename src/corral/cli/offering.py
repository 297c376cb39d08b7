"""``corral offering``: named CPU/memory/disk presets for VMs."""

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
from corral.cli.output import Column, gib, mib, print_page
from corral.cli.sizes import gib_option, mib_option

app = typer.Typer(help="Offerings: CPU/memory/disk presets.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda o: o.name),
    ("ID", lambda o: o.id),
    ("CPUS", lambda o: o.cpus),
    ("MEMORY", lambda o: mib(o.memory_mb)),
    ("DISK", lambda o: gib(o.disk_gb)),
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    cpus: Annotated[int, typer.Option("--cpus", min=1, help="Virtual CPUs.")],
    memory: Annotated[
        int,
        typer.Option("--memory", parser=mib_option, metavar="SIZE", help="MiB, or 2G, 512M..."),
    ],
    disk: Annotated[
        int,
        typer.Option("--disk", parser=gib_option, metavar="SIZE", help="GiB, or 10G, 512M..."),
    ],
    no_wait: NoWait = False,
) -> None:
    """Create an offering."""
    state = state_of(ctx)
    op = state.client().offerings.create(name, cpus=cpus, memory_mb=memory, disk_gb=disk)
    finish(state, op, no_wait=no_wait, done=f"Offering {name} created ({op.target_id}).")


@app.command("list")
def list_offerings(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List offerings."""
    state = state_of(ctx)
    page = state.client().offerings.list(limit=limit, offset=offset, sort=sort, q=where, tag=tag)
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="offering", collection=lambda c: c.offerings)
