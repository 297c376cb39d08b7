"""``corral op``: list, show, wait for and cancel operations."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import Limit, Offset, Sort, Tags, Where, finish, show, state_of
from corral.cli.output import Column, print_page

app = typer.Typer(help="Operations: what mutating commands started.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("ID", lambda o: o.id),
    ("TYPE", lambda o: o.type),
    ("STATUS", lambda o: o.status),
    ("PROGRESS", lambda o: f"{o.progress}%"),
    ("TARGET", lambda o: o.target_id),
    ("CREATED", lambda o: o.created_at),
    ("MESSAGE", lambda o: o.error.message if o.error else o.message),
]

OpId = Annotated[str, typer.Argument(help="Operation id.", show_default=False)]


@app.command("list")
def list_operations(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="queued, running, succeeded, failed or cancelled."),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="Target resource id.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = "-created_at",
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List operations, newest first."""
    state = state_of(ctx)
    page = state.client().operations.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, status=status, target_id=target
    )
    print_page(page, COLUMNS, json_output=state.json)


@app.command("show")
def show_operation(ctx: typer.Context, op_id: OpId) -> None:
    """Show an operation."""
    state = state_of(ctx)
    show(state, state.client().operations.get(op_id).model)


@app.command("wait")
def wait(ctx: typer.Context, op_id: OpId) -> None:
    """Wait until an operation is done (exit status 1 if it failed)."""
    state = state_of(ctx)
    op = state.client().operations.get(op_id)
    finish(state, op, no_wait=False, done=lambda o: f"Operation {o.id} ({o.type}) {o.status}.")


@app.command("cancel")
def cancel(ctx: typer.Context, op_id: OpId) -> None:
    """Cancel a queued operation."""
    state = state_of(ctx)
    op = state.client().operations.cancel(op_id)
    if state.json:
        show(state, op.model)
    else:
        typer.echo(f"Operation {op.id} ({op.type}) {op.status}.")
