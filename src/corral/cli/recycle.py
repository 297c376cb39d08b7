"""``corral recycle``: the recycle bin (list, restore, expunge); ``corral deletion-policy``: what
a delete of a VM, a volume or an image does (show, set); the ``delete --expunge`` of the VM,
volume and image commands."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from corral.cli.common import NoWait, Ref, finish, state_of
from corral.cli.output import Column, emit_json, print_table

if TYPE_CHECKING:
    from corral.api.recycle import KindPolicy
    from corral.sdk import Client, Operation


class Kind(StrEnum):
    """``corral.api.recycle.RecycleKind``, not imported: the CLI starts without pydantic."""

    vm = "vm"
    volume = "volume"
    image = "image"


class Policy(StrEnum):
    """``corral.api.recycle.DeletionPolicy``, not imported (start-up time)."""

    immediate = "immediate"
    delayed = "delayed"
    never = "never"


NOUNS = {"vm": "VM", "volume": "Volume", "image": "Image"}
PLURALS = {"vm": "VMs", "volume": "volumes", "image": "images"}

app = typer.Typer(
    help="The recycle bin: deleted VMs, volumes and images kept (with their disks, claims and "
    "quota) until restored or expunged.",
    no_args_is_help=True,
)
policy_app = typer.Typer(
    help="Deletion policies: whether a delete of a VM, a volume or an image is immediate or goes "
    "to the recycle bin, and for how long.",
    no_args_is_help=True,
)

EntryId = Annotated[
    str, typer.Argument(help="The bin entry's id (corral recycle list).", show_default=False)
]

COLUMNS: list[Column] = [
    ("ID", lambda e: e.id),
    ("KIND", lambda e: e.kind),
    ("NAME", lambda e: e.name),
    ("DELETED", lambda e: e.deleted_at),
    ("EXPUNGED AT", lambda e: e.expunge_at or "never"),
]


def _collection(client: Client, kind: str) -> Any:
    return {"vm": client.vms, "volume": client.volumes, "image": client.images}[kind]


@app.command("list")
def list_entries(
    ctx: typer.Context,
    kind: Annotated[
        Kind | None,
        typer.Option("--kind", help="Only this kind of resource.", case_sensitive=False),
    ] = None,
) -> None:
    """List the recycle bin, newest first: what each entry was named and when it is expunged
    (never: kept until expunged by hand)."""
    state = state_of(ctx)
    items = state.client().recycle_bin.list(kind=kind.value if kind else None)
    if state.json:
        emit_json(items)
    elif not items:
        typer.echo("The recycle bin is empty.")
    else:
        print_table(items, COLUMNS)


def _restored(client: Client, op: Operation) -> str:
    from corral.api.errors import CorralError

    kind = op.target_type or "vm"
    try:
        res = _collection(client, kind).get(op.target_id)
    except CorralError:
        return f"{NOUNS.get(kind, kind)} {op.target_id} restored."
    return f"{NOUNS[kind]} {res.name} restored ({res.id}): {res.status}."


@app.command("restore")
def restore(
    ctx: typer.Context,
    entry_id: EntryId,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Restore under this name (the old one is taken).", show_default=False
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Put a deleted resource back, under its old name or --name: a VM comes back stopped, a
    volume available, an image ready."""
    state = state_of(ctx)
    client = state.client()
    op = client.recycle_bin.restore(entry_id, name=name)
    finish(state, op, no_wait=no_wait, done=lambda o: _restored(client, o))


@app.command("expunge")
def expunge(ctx: typer.Context, entry_id: EntryId, no_wait: NoWait = False) -> None:
    """Delete a resource in the bin for good, giving back its disks, claims and quota (refused
    while its kind's policy is never)."""
    from corral.api.errors import CorralError

    state = state_of(ctx)
    client = state.client()
    try:
        entry = next((e for e in client.recycle_bin.list() if e.id == entry_id), None)
    except CorralError:  # the expunge itself says what is wrong
        entry = None
    op = client.recycle_bin.expunge(entry_id)

    def done(o: Operation) -> str:
        kind = entry.kind if entry else o.target_type or ""
        what = entry.name if entry else o.target_id
        return f"{NOUNS.get(kind, kind)} {what} expunged: deleted for good."

    finish(state, op, no_wait=no_wait, done=done)


def _retention(p: KindPolicy) -> str:
    return f"{p.retention_hours:g} h" if p.policy == "delayed" else "-"


POLICY_COLUMNS: list[Column] = [
    ("KIND", lambda row: row[0]),
    ("POLICY", lambda row: row[1].policy),
    ("RETENTION", lambda row: _retention(row[1])),
]


@policy_app.command("show")
def show_policies(ctx: typer.Context) -> None:
    """Show each kind's deletion policy: immediate (deleted at once), delayed (in the recycle
    bin for the retention, then expunged) or never (kept in the bin until expunged by hand,
    which the policy refuses)."""
    state = state_of(ctx)
    policies = state.client().deletion_policies.get()
    if state.json:
        emit_json(policies)
        return
    print_table([(k, getattr(policies, k)) for k in Kind], POLICY_COLUMNS)


def _policy_set(kind: str, policy: str, hours: float) -> str:
    what = PLURALS[kind]
    match policy:
        case "immediate":
            return f"Deleted {what} are deleted at once."
        case "delayed":
            return f"Deleted {what} stay {hours:g} h in the recycle bin."
        case _:
            return f"Deleted {what} stay in the recycle bin until the policy changes."


@policy_app.command("set")
def set_policy(
    ctx: typer.Context,
    kind: Annotated[
        Kind, typer.Argument(help="vm, volume or image.", case_sensitive=False, show_default=False)
    ],
    policy: Annotated[
        Policy,
        typer.Argument(
            help="immediate, delayed or never.", case_sensitive=False, show_default=False
        ),
    ],
    retention_hours: Annotated[
        float | None,
        typer.Option(
            "--retention-hours",
            help="delayed: hours in the bin before the expunge (default: as it is, 24 at first).",
            show_default=False,
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Set the deletion policy of one kind of resource (the others are kept); entries already in
    the bin keep their expunge time. Needs a platform admin."""
    if retention_hours is not None and retention_hours <= 0:
        raise typer.BadParameter("must be more than 0", param_hint="--retention-hours")
    state = state_of(ctx)
    client = state.client()
    policies = client.deletion_policies.get()
    current: KindPolicy = getattr(policies, kind.value)
    hours = current.retention_hours if retention_hours is None else retention_hours
    change: dict[str, Any] = {kind.value: {"policy": policy.value, "retention_hours": hours}}
    op = client.deletion_policies.set(policies, **change)  # the other kinds as they are
    finish(state, op, no_wait=no_wait, done=_policy_set(kind.value, policy.value, hours))


Expunge = Annotated[
    bool,
    typer.Option(
        "--expunge",
        help="Delete at once and for good, not to the recycle bin (whatever the deletion policy).",
    ),
]


class _Deletable(Protocol):
    def delete(self, ref: str, *, expunge: bool = False) -> Operation: ...


def deleted(noun: str, ref: str, op: Operation) -> str:
    """What a delete did: to the recycle bin (a ``<kind>.recycle`` operation) or for good."""
    noun = noun[0].upper() + noun[1:]
    if op.type.endswith(".recycle"):
        return f"{noun} {ref} deleted: in the recycle bin until expunged (corral recycle list)."
    return f"{noun} {ref} deleted."


def add_expungeable_delete(
    app: typer.Typer, *, noun: str, collection: Callable[[Client], _Deletable]
) -> None:
    """Replace the ``delete REF [--no-wait]`` that ``add_show_delete`` registered on ``app`` with
    one that also takes ``--expunge`` (skip the recycle bin)."""
    app.registered_commands = [c for c in app.registered_commands if c.name != "delete"]

    def delete_command(
        ctx: typer.Context, ref: Ref, expunge: Expunge = False, no_wait: NoWait = False
    ) -> None:
        state = state_of(ctx)
        op = collection(state.client()).delete(ref, expunge=expunge)
        finish(state, op, no_wait=no_wait, done=lambda o: deleted(noun, ref, o))

    delete_command.__doc__ = (
        f"Delete a {noun}: to the recycle bin under the delayed and never deletion policies "
        "(corral deletion-policy show), at once with --expunge or the immediate policy."
    )
    app.command("delete")(delete_command)
