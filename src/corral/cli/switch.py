"""``corral switch``: distributed switches (platform admins), their clusters and uplinks."""

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

app = typer.Typer(
    help="Distributed switches: one logical switch over the hosts of its clusters.",
    no_args_is_help=True,
)

COLUMNS: list[Column] = [
    ("NAME", lambda s: s.name),
    ("ID", lambda s: s.id),
    ("UPLINK", lambda s: s.uplink),
    ("MTU", lambda s: s.mtu),
    ("CLUSTERS", lambda s: len(s.clusters)),
    ("HOST UPLINKS", lambda s: len(s.uplinks)),
]

Uplink = Annotated[
    str | None, typer.Option("--uplink", help="Host interface used as uplink (default eth0).")
]
HostUplinks = Annotated[
    list[str] | None,
    typer.Option("--host-uplink", help="HOST=INTERFACE: a host's own uplink (repeatable)."),
]
Mtu = Annotated[int | None, typer.Option("--mtu", min=576, max=9000, help="MTU (default 1500).")]
Description = Annotated[str | None, typer.Option("--description", "-d")]
Cluster = Annotated[str, typer.Argument(help="Cluster name or id.", show_default=False)]


def parse_uplinks(items: list[str] | None) -> dict[str, str] | None:
    """``["host1=eth1", ...]`` -> ``{"host1": "eth1"}``; ``typer.BadParameter`` on bad text."""
    if items is None:
        return None
    out: dict[str, str] = {}
    for item in items:
        host, sep, interface = item.partition("=")
        if not sep or not host or not interface:
            raise typer.BadParameter(
                f"{item!r}: expected HOST=INTERFACE", param_hint="--host-uplink"
            )
        out[host] = interface
    return out


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    cluster: Annotated[
        list[str] | None, typer.Option("--cluster", "-c", help="Attach this cluster (repeatable).")
    ] = None,
    uplink: Uplink = None,
    host_uplink: HostUplinks = None,
    mtu: Mtu = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Create a switch on the hosts of the given clusters."""
    state = state_of(ctx)
    op = state.client().switches.create(
        name,
        uplink=uplink or "eth0",
        uplinks=parse_uplinks(host_uplink),
        clusters=cluster or [],
        mtu=1500 if mtu is None else mtu,
        description=description or "",
    )
    finish(state, op, no_wait=no_wait, done=f"Switch {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    uplink: Uplink = None,
    host_uplink: Annotated[
        list[str] | None,
        typer.Option("--host-uplink", help="HOST=INTERFACE (repeatable): replaces them all."),
    ] = None,
    clear_host_uplinks: Annotated[
        bool, typer.Option("--clear-host-uplinks", help="Remove every host's own uplink.")
    ] = False,
    mtu: Mtu = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Change a switch (only the options given)."""
    state = state_of(ctx)
    uplinks = {} if clear_host_uplinks else parse_uplinks(host_uplink)
    op = state.client().switches.update(
        ref, name=name, uplink=uplink, uplinks=uplinks, mtu=mtu, description=description
    )
    finish(state, op, no_wait=no_wait, done=f"Switch {ref} updated.")


@app.command("attach")
def attach(ctx: typer.Context, ref: Ref, cluster: Cluster, no_wait: NoWait = False) -> None:
    """Attach a cluster: its hosts carry the switch."""
    state = state_of(ctx)
    op = state.client().switches.attach_cluster(ref, cluster)
    finish(state, op, no_wait=no_wait, done=f"Cluster {cluster} attached to {ref}.")


@app.command("detach")
def detach(ctx: typer.Context, ref: Ref, cluster: Cluster, no_wait: NoWait = False) -> None:
    """Detach a cluster from a switch."""
    state = state_of(ctx)
    op = state.client().switches.detach_cluster(ref, cluster)
    finish(state, op, no_wait=no_wait, done=f"Cluster {cluster} detached from {ref}.")


@app.command("list")
def list_switches(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List switches."""
    state = state_of(ctx)
    page = state.client().switches.list(limit=limit, offset=offset, sort=sort, q=where, tag=tag)
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="switch", collection=lambda c: c.switches)
