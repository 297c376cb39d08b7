"""``corral pool``: storage pools (platform admins) and the clusters attached to them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from corral.sdk import Client

app = typer.Typer(help="Storage pools: where VM disks live.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda p: p.name),
    ("ID", lambda p: p.id),
    ("TYPE", lambda p: p.type),
    ("STATE", lambda p: p.state),
    ("CLUSTERS", lambda p: len(p.cluster_ids)),
    ("OVERCOMMIT", lambda p: f"{p.overcommit:g}"),
    ("TOTAL GB", lambda p: f"{p.capacity.total_gb:g}"),
    ("USED GB", lambda p: f"{p.capacity.used_gb:g}"),
    ("HOSTS OK/FAILED", lambda p: f"{p.hosts.ok}/{p.hosts.failed}"),
]

HOST_COLUMNS: list[Column] = [
    ("HOST", lambda r: r.host_name),
    ("OK", lambda r: r.ok),
    ("TOTAL GB", lambda r: f"{r.total_gb:g}"),
    ("FREE GB", lambda r: f"{r.free_gb:g}"),
    ("UPDATED", lambda r: r.updated_at),
    ("ERROR", lambda r: r.error),
]

Overcommit = Annotated[
    float | None,
    typer.Option("--overcommit", min=0.01, max=100, help="Thin provisioning ratio (default 1)."),
]
CredentialsStdin = Annotated[
    bool,
    typer.Option(
        "--credentials-stdin",
        help="Read the credentials (cephx key, CHAP user:secret) from stdin (one line).",
    ),
]


def _read_credentials(from_stdin: bool) -> str | None:
    return sys.stdin.readline().rstrip("\r\n") if from_stdin else None


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    pool_type: Annotated[
        str, typer.Option("--type", "-t", help="local, nfs, iscsi or rbd.", show_default=False)
    ],
    path: Annotated[str | None, typer.Option("--path", help="local: directory.")] = None,
    server: Annotated[str | None, typer.Option("--server", help="nfs: server.")] = None,
    export: Annotated[str | None, typer.Option("--export", help="nfs: export path.")] = None,
    portal: Annotated[str | None, typer.Option("--portal", help="iscsi: host[:port].")] = None,
    iqn: Annotated[str | None, typer.Option("--iqn", help="iscsi: target IQN.")] = None,
    monitor: Annotated[
        list[str] | None, typer.Option("--monitor", help="rbd: monitor host[:port] (repeatable).")
    ] = None,
    rbd_pool: Annotated[str | None, typer.Option("--rbd-pool", help="rbd: Ceph pool.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="rbd: cephx user.")] = None,
    cluster: Annotated[
        list[str] | None, typer.Option("--cluster", "-c", help="Attach this cluster (repeatable).")
    ] = None,
    overcommit: Overcommit = None,
    credentials_stdin: CredentialsStdin = False,
    no_wait: NoWait = False,
) -> None:
    """Create a storage pool with its type's settings (only those given are sent)."""
    given: dict[str, Any] = {
        "path": path,
        "server": server,
        "export": export,
        "portal": portal,
        "iqn": iqn,
        "monitors": monitor or None,
        "pool": rbd_pool,
        "user": user,
    }
    state = state_of(ctx)
    op = state.client().storage_pools.create(
        name,
        type=pool_type,
        settings={k: v for k, v in given.items() if v is not None},
        credentials=_read_credentials(credentials_stdin),
        overcommit=1.0 if overcommit is None else overcommit,
        clusters=cluster or [],
    )
    finish(state, op, no_wait=no_wait, done=f"Storage pool {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    pool_state: Annotated[
        str | None,
        typer.Option("--state", help="enabled, maintenance or disabled.", show_default=False),
    ] = None,
    overcommit: Overcommit = None,
    credentials_stdin: CredentialsStdin = False,
    no_wait: NoWait = False,
) -> None:
    """Change a pool's state or overcommit, or replace its credentials."""
    state = state_of(ctx)
    op = state.client().storage_pools.update(
        ref,
        state=pool_state,
        overcommit=overcommit,
        credentials=_read_credentials(credentials_stdin),
    )
    finish(state, op, no_wait=no_wait, done=f"Storage pool {ref} updated.")


@app.command("attach")
def attach(
    ctx: typer.Context,
    ref: Ref,
    cluster: Annotated[str, typer.Argument(help="Cluster name or id.", show_default=False)],
    no_wait: NoWait = False,
) -> None:
    """Attach a cluster to a pool: its hosts may use the pool."""
    state = state_of(ctx)
    op = state.client().storage_pools.attach(ref, cluster)
    finish(state, op, no_wait=no_wait, done=f"Cluster {cluster} attached to {ref}.")


@app.command("detach")
def detach(
    ctx: typer.Context,
    ref: Ref,
    cluster: Annotated[str, typer.Argument(help="Cluster name or id.", show_default=False)],
    no_wait: NoWait = False,
) -> None:
    """Detach a cluster from a pool."""
    state = state_of(ctx)
    op = state.client().storage_pools.detach(ref, cluster)
    finish(state, op, no_wait=no_wait, done=f"Cluster {cluster} detached from {ref}.")


@app.command("list")
def list_pools(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List storage pools."""
    state = state_of(ctx)
    page = state.client().storage_pools.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag
    )
    print_page(page, COLUMNS, json_output=state.json)


@app.command("hosts")
def hosts(ctx: typer.Context, ref: Ref) -> None:
    """What each host of a pool's clusters reports of it: usable or why not, and its sizes."""
    state = state_of(ctx)
    reports = state.client().storage_pools.hosts(ref)
    if state.json:
        emit_json(reports)
    else:
        print_table(reports, HOST_COLUMNS)


_SHOWN = 20
"""How many volume names the cascading delete names (then "and N more")."""


def _cascade_done(client: Client, ref: str) -> str:
    """What ``delete --cascade`` will have removed, said before it starts: the volumes of the
    pool the caller sees (their snapshots go with them)."""
    from corral.api.errors import CorralError

    try:
        pool_id = client.storage_pools.get(ref).id
        page = client.volumes.list(q=f"pool_id={pool_id}", sort="name", limit=_SHOWN)
    except CorralError:  # the delete itself says what is wrong
        return f"Storage pool {ref} deleted with its volumes."
    if not page.total:
        return f"Storage pool {ref} deleted (it held no volumes)."
    names = ", ".join(v.name for v in page.items)
    more = page.total - len(page.items)
    if more > 0:
        names += f" and {more} more"
    return (
        f"Storage pool {ref} deleted with its {page.total} volume(s) and their snapshots: {names}."
    )


add_show_delete(app, noun="storage pool", collection=lambda c: c.storage_pools)
# The shared ``delete`` has no --cascade: this module's own takes its place.
app.registered_commands = [c for c in app.registered_commands if c.name != "delete"]


@app.command("delete")
def delete(
    ctx: typer.Context,
    ref: Ref,
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Delete the pool's volumes first (their files and snapshots on the pool); "
            "refused while any is attached or busy.",
        ),
    ] = False,
    no_wait: NoWait = False,
) -> None:
    """Delete a storage pool: refused while it holds volumes, unless --cascade."""
    state = state_of(ctx)
    client = state.client()
    done = _cascade_done(client, ref) if cascade else f"Storage pool {ref} deleted."
    op = client.storage_pools.delete(ref, cascade=cascade)
    finish(state, op, no_wait=no_wait, done=done)
