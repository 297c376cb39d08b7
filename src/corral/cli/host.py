"""``corral host``: servers running a Corral agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.common import (
    Limit,
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

if TYPE_CHECKING:
    from corral.sdk import Operation

app = typer.Typer(help="Hosts: servers running a Corral agent.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda h: h.name),
    ("ID", lambda h: h.id),
    ("STATUS", lambda h: h.status),
    ("ENABLED", lambda h: h.enabled),
    ("CPUS", lambda h: f"{h.capacity.cpus_used}/{h.capacity.cpus_total}"),
    ("MEMORY MiB", lambda h: f"{h.capacity.memory_mb_used}/{h.capacity.memory_mb_total}"),
    ("VMS", lambda h: h.vm_count),
    ("URL", lambda h: h.url),
]


@app.command("add")
def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Agent URL, e.g. https://host1:7070")],
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Cluster name or id.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Defaults to the agent's host name.")
    ] = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="SHA-256 fingerprint of the agent's certificate (the agent logs it at start); "
            "enrollment stops if the agent presents another one.",
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Add a host to a cluster (the server connects to its agent)."""
    state = state_of(ctx)
    client = state.client()
    op = client.hosts.add(url, cluster, name, fingerprint=fingerprint)

    def done(o: Operation) -> str:
        host = client.hosts.get(o.target_id or name or url)
        return f"Host {host.name} added ({host.id}): {host.status.value}."

    finish(state, op, no_wait=no_wait, done=done)


def _set_enabled(ctx: typer.Context, ref: str, enabled: bool, no_wait: bool) -> None:
    state = state_of(ctx)
    op = state.client().hosts.update(ref, enabled=enabled)
    finish(state, op, no_wait=no_wait, done=f"Host {ref} {'enabled' if enabled else 'disabled'}.")


@app.command("enable")
def enable(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Let the scheduler place VMs on the host."""
    _set_enabled(ctx, ref, True, no_wait)


@app.command("disable")
def disable(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Keep new VMs off the host (its VMs keep running)."""
    _set_enabled(ctx, ref, False, no_wait)


@app.command("list")
def list_hosts(
    ctx: typer.Context,
    cluster: Annotated[
        str | None, typer.Option("--cluster", "-c", help="Only this cluster.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List hosts with their capacity (used/total)."""
    state = state_of(ctx)
    client = state.client()
    cluster_id = client.clusters.get(cluster).id if cluster else None
    page = client.hosts.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, cluster_id=cluster_id
    )
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="host", collection=lambda c: c.hosts, delete_verb="remove")
