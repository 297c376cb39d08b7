"""``corral cluster``: groups of alike hosts in a zone, with their overcommit ratios."""

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
from corral.cli.output import Column, print_page

app = typer.Typer(help="Clusters: groups of alike hosts in a zone.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda c: c.name),
    ("ID", lambda c: c.id),
    ("ZONE", lambda c: c.zone_id),
    ("CPU OVERCOMMIT", lambda c: f"{c.cpu_overcommit:g}"),
    ("MEMORY OVERCOMMIT", lambda c: f"{c.memory_overcommit:g}"),
]

CpuOvercommit = Annotated[
    float | None,
    typer.Option("--cpu-overcommit", min=0.01, max=64, help="vCPUs per physical CPU thread."),
]
MemoryOvercommit = Annotated[
    float | None,
    typer.Option("--memory-overcommit", min=0.01, max=4, help="VM memory per byte of host memory."),
]
Description = Annotated[str | None, typer.Option("--description", "-d")]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    zone: Annotated[str, typer.Option("--zone", "-z", help="Zone name or id.")],
    cpu_overcommit: CpuOvercommit = None,
    memory_overcommit: MemoryOvercommit = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Create a cluster in a zone (overcommit defaults: CPU 4, memory 1)."""
    state = state_of(ctx)
    op = state.client().clusters.create(
        name,
        zone=zone,
        description=description or "",
        cpu_overcommit=4.0 if cpu_overcommit is None else cpu_overcommit,
        memory_overcommit=1.0 if memory_overcommit is None else memory_overcommit,
    )
    finish(state, op, no_wait=no_wait, done=f"Cluster {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    cpu_overcommit: CpuOvercommit = None,
    memory_overcommit: MemoryOvercommit = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Change a cluster's overcommit ratios or description."""
    state = state_of(ctx)
    op = state.client().clusters.update(
        ref,
        description=description,
        cpu_overcommit=cpu_overcommit,
        memory_overcommit=memory_overcommit,
    )
    finish(state, op, no_wait=no_wait, done=f"Cluster {ref} updated.")


@app.command("list")
def list_clusters(
    ctx: typer.Context,
    zone: Annotated[str | None, typer.Option("--zone", "-z", help="Only this zone.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List clusters."""
    state = state_of(ctx)
    client = state.client()
    zone_id = client.zones.get(zone).id if zone else None
    page = client.clusters.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, zone_id=zone_id
    )
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="cluster", collection=lambda c: c.clusters)
