"""``corral vm snapshot``: whole-VM snapshots: create, list, show, revert, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.common import Name, NoWait, finish, show, state_of
from corral.cli.output import Column, emit_json, print_table

if TYPE_CHECKING:
    from corral.api.vm_snapshots import VmSnapshot
    from corral.sdk import Client, Operation

app = typer.Typer(
    help="Whole-VM snapshots: every volume of a VM at one moment, optionally with its memory"
    " (the VM's root disk must be a volume: vm create --root-pool).",
    no_args_is_help=True,
)

VmArg = Annotated[str, typer.Argument(help="VM name or id.", show_default=False)]
SnapArg = Annotated[
    str, typer.Argument(help="Snapshot name or id (of that VM).", show_default=False)
]

COLUMNS: list[Column] = [
    ("NAME", lambda s: s.name),
    ("ID", lambda s: s.id),
    ("STATUS", lambda s: s.status),
    ("MEMORY", lambda s: s.memory),
    ("QUIESCED", lambda s: s.quiesced),
    ("DISKS", lambda s: len(s.snapshots)),
    ("CREATED", lambda s: s.created_at),
    ("DESCRIPTION", lambda s: s.description or None),
]


def describe(snap: VmSnapshot) -> str:
    """``2 disk(s)``, then ``, with memory`` and ``, quiesced`` when they apply."""
    parts = [f"{len(snap.snapshots)} disk(s)"]
    if snap.memory:
        parts.append("with memory")
    if snap.quiesced:
        parts.append("quiesced")
    return ", ".join(parts)


@app.command("create")
def create(
    ctx: typer.Context,
    vm: VmArg,
    name: Name,
    description: Annotated[
        str, typer.Option("--description", "-d", help="What this snapshot is for.")
    ] = "",
    memory: Annotated[
        bool,
        typer.Option(
            "--memory", help="Save the running VM's memory too: a revert resumes the guest."
        ),
    ] = False,
    quiesce: Annotated[
        bool,
        typer.Option(
            "--quiesce/--no-quiesce",
            help="Freeze the guest's file systems first when its guest agent answers (else the"
            " snapshot is crash-consistent).",
        ),
    ] = True,
    no_wait: NoWait = False,
) -> None:
    """Snapshot every volume of a VM at one moment (live when it runs)."""
    state = state_of(ctx)
    client = state.client()
    op = client.vm_snapshots.create(
        vm, name, description=description, memory=memory, quiesce=quiesce
    )

    def done(o: Operation) -> str:
        snap = client.vm_snapshots.get(vm, o.target_id or name)
        return f"Snapshot {snap.name} of VM {vm} created ({snap.id}): {describe(snap)}."

    finish(state, op, no_wait=no_wait, done=done)


@app.command("list")
def list_vm_snapshots(ctx: typer.Context, vm: VmArg) -> None:
    """List a VM's snapshots, oldest first."""
    state = state_of(ctx)
    snaps = state.client().vm_snapshots.list(vm)
    if state.json:
        emit_json(snaps)
        return
    if not snaps:
        typer.echo(f"VM {vm} has no snapshots.")
        return
    print_table(snaps, COLUMNS)


@app.command("show")
def show_vm_snapshot(ctx: typer.Context, vm: VmArg, snapshot: SnapArg) -> None:
    """Show a VM snapshot; snapshots: its node in each volume's snapshot tree."""
    state = state_of(ctx)
    show(state, state.client().vm_snapshots.get(vm, snapshot))


@app.command("revert")
def revert(ctx: typer.Context, vm: VmArg, snapshot: SnapArg, no_wait: NoWait = False) -> None:
    """Revert a stopped VM to a snapshot.

    Each of its volumes goes on from the snapshot (what was written since is discarded); a
    snapshot with memory resumes the VM where it was."""
    state = state_of(ctx)
    client = state.client()
    op = client.vm_snapshots.revert(vm, snapshot)
    finish(state, op, no_wait=no_wait, done=lambda o: _reverted(client, vm, snapshot, o))


def _reverted(client: Client, vm: str, snapshot: str, op: Operation) -> str:
    snap = client.vm_snapshots.get(vm, op.target_id or snapshot)
    resumed = ": resumed from its memory state" if snap.memory else ""
    return f"VM {vm} reverted to snapshot {snap.name}{resumed}."


@app.command("delete")
def delete(ctx: typer.Context, vm: VmArg, snapshot: SnapArg, no_wait: NoWait = False) -> None:
    """Delete a VM snapshot (the VM may run).

    Each volume's node is merged into its children (the volumes lose no data) and the saved
    memory is removed."""
    state = state_of(ctx)
    op = state.client().vm_snapshots.delete(vm, snapshot)
    finish(state, op, no_wait=no_wait, done=f"Snapshot {snapshot} of VM {vm} deleted.")
