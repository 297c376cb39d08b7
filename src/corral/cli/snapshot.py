"""``corral snapshot``: volume snapshots: create, list, tree, revert, update, delete (merge)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated

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
    names_of,
    state_of,
)
from corral.cli.output import Column, cell, console, emit_json, gib, human_bytes, print_page

if TYPE_CHECKING:
    from rich.text import Text
    from rich.tree import Tree

    from corral.api.common import Page
    from corral.api.snapshots import Snapshot
    from corral.api.volumes import Volume
    from corral.sdk import Client

app = typer.Typer(
    help="Volume snapshots: a tree per data volume; revert to any node, delete by merging.",
    no_args_is_help=True,
)

VolumeArg = Annotated[str, typer.Argument(help="Volume name or id.", show_default=False)]
CURRENT_MARK = "*"


def used(value: int | None) -> str | None:
    """A size in bytes as people read it (``4.0 MiB``); None (shown ``-``): not measured."""
    return None if value is None else human_bytes(value)


def columns(volume_names: Mapping[str, str], snapshot_names: Mapping[str, str]) -> list[Column]:
    """The table of snapshots; ids are shown where no name is known. USED is what the node
    takes on its pool (``used_bytes``; ``-``: not measured)."""

    def parent(s: Snapshot) -> str | None:
        return None if s.parent_id is None else snapshot_names.get(s.parent_id, s.parent_id)

    return [
        ("NAME", lambda s: s.name),
        ("ID", lambda s: s.id),
        ("VOLUME", lambda s: volume_names.get(s.volume_id, s.volume_id)),
        ("STATUS", lambda s: s.status),
        ("CURRENT", lambda s: s.current),
        ("USED", lambda s: used(s.used_bytes)),
        ("PARENT", parent),
        ("CREATED", lambda s: s.created_at),
    ]


def print_snapshots(state: CliState, client: Client, page: Page[Snapshot]) -> None:
    """A page of snapshots as a table (volume and parent names looked up) or as JSON."""
    if state.json:
        emit_json(page)
        return
    volume_names = names_of(client.volumes, {s.volume_id for s in page.items})
    snapshot_names = {s.id: s.name for s in page.items}
    missing = {s.parent_id for s in page.items if s.parent_id and s.parent_id not in snapshot_names}
    snapshot_names |= names_of(client.snapshots, {p for p in missing if p})
    print_page(page, columns(volume_names, snapshot_names), json_output=False)


def node_label(snap: Snapshot) -> Text:
    """One node of the tree: ``* s3 (current)  10 GiB  4.0 MiB used  2026-01-01 12:00:00``
    (the marker and ``(current)`` only on the current node; ``used`` only when measured), then
    its status unless ready, its description."""
    from rich.text import Text

    label = Text()
    if snap.current:
        label.append(f"{CURRENT_MARK} {snap.name} (current)", style="bold")
    else:
        label.append(snap.name)
    label.append(f"  {gib(snap.size_gb)}")
    if snap.used_bytes is not None:
        label.append(f"  {human_bytes(snap.used_bytes)} used")
    label.append(f"  {cell(snap.created_at)}")
    if snap.status != "ready":
        label.append(f"  [{cell(snap.status)}]", style="yellow")
    if snap.error:
        label.append(f"  error: {snap.error}", style="red")
    if snap.description:
        label.append(f"  {snap.description}", style="dim")
    return label


def build_tree(volume: Volume, snapshots: Sequence[Snapshot]) -> Tree:
    """The volume's snapshots as a rich ``Tree`` under the volume (``data1  20 GiB  snapshots
    12.0 MiB``: its size, then what its snapshots take in total when measured): children under
    their parent, oldest first; a snapshot whose parent is not among ``snapshots`` is shown as a
    root."""
    from rich.text import Text
    from rich.tree import Tree

    root_label = Text(f"{volume.name}  {gib(volume.size_gb)}", style="bold")
    if volume.snapshots_bytes is not None:
        root_label.append(f"  snapshots {human_bytes(volume.snapshots_bytes)}")
    if snapshots and not any(s.current for s in snapshots):
        root_label.append("  (its content descends from no snapshot)", style="dim")
    tree = Tree(root_label)
    ids = {s.id for s in snapshots}
    children: dict[str | None, list[Snapshot]] = {}
    for snap in sorted(snapshots, key=lambda s: (s.created_at, s.name, s.id)):
        parent = snap.parent_id if snap.parent_id in ids else None
        children.setdefault(parent, []).append(snap)
    stack: list[tuple[Tree, str | None]] = [(tree, None)]
    while stack:
        node, snap_id = stack.pop()
        for child in children.get(snap_id, []):
            stack.append((node.add(node_label(child)), child.id))
    return tree


@app.command("create")
def create(
    ctx: typer.Context,
    volume: VolumeArg,
    name: Name,
    description: Annotated[
        str, typer.Option("--description", "-d", help="What this snapshot is for.")
    ] = "",
    quiesce: Annotated[
        bool,
        typer.Option(
            "--quiesce",
            help="Freeze the guest's file systems first (needs the guest agent in a running VM).",
        ),
    ] = False,
    no_wait: NoWait = False,
) -> None:
    """Take a snapshot of a volume (live when its VM runs); the volume goes on from it."""
    state = state_of(ctx)
    op = state.client().snapshots.create(volume, name, description=description, quiesce=quiesce)
    finish(
        state,
        op,
        no_wait=no_wait,
        done=lambda o: f"Snapshot {name} of volume {volume} created ({o.target_id}).",
    )


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    new_name: Annotated[
        str | None, typer.Option("--name", help="Rename the snapshot.", show_default=False)
    ] = None,
    description: Annotated[
        str | None,
        typer.Option("--description", "-d", help="New description.", show_default=False),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Rename a snapshot or change its description."""
    if new_name is None and description is None:
        raise typer.BadParameter("give --name or --description", param_hint="--name")
    state = state_of(ctx)
    op = state.client().snapshots.update(ref, name=new_name, description=description)
    finish(state, op, no_wait=no_wait, done=f"Snapshot {new_name or ref} updated.")


@app.command("revert")
def revert(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Revert a volume to a snapshot: a new branch starts from it. The VM using the volume must
    be stopped; what was written since the volume's last snapshot is discarded."""
    state = state_of(ctx)
    op = state.client().snapshots.revert(ref)
    finish(
        state,
        op,
        no_wait=no_wait,
        done=f"Reverted to snapshot {ref}: the volume goes on from it.",
    )


@app.command("list")
def list_snapshots(
    ctx: typer.Context,
    volume: Annotated[
        str | None, typer.Option("--volume", help="Only the snapshots of this volume.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="e.g. ready, creating, deleting, error.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List snapshots."""
    state = state_of(ctx)
    client = state.client()
    listing = client.snapshots.tree_of(volume) if volume else client.snapshots
    page = listing.list(limit=limit, offset=offset, sort=sort, q=where, tag=tag, status=status)
    print_snapshots(state, client, page)


@app.command("tree")
def tree(ctx: typer.Context, volume: VolumeArg) -> None:
    """Show a volume's snapshots as a tree; * marks the current one (the volume's content
    descends from it)."""
    state = state_of(ctx)
    client = state.client()
    vol = client.volumes.get(volume)
    snapshots = list(client.snapshots.tree_of(vol.id).iter(page_size=1000))
    if state.json:
        emit_json(snapshots)
        return
    if not snapshots:
        typer.echo(f"Volume {vol.name} has no snapshots.")
        return
    console().print(build_tree(vol, snapshots))


add_show_delete(app, noun="snapshot", collection=lambda c: c.snapshots)
