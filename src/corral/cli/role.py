"""``corral role``: built-in and custom roles (sets of project permissions)."""

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
    help="Roles: sets of permissions members hold in a project.", no_args_is_help=True
)

COLUMNS: list[Column] = [
    ("NAME", lambda r: r.name),
    ("ID", lambda r: r.id),
    ("BUILT-IN", lambda r: r.builtin),
    ("DESCRIPTION", lambda r: r.description),
    ("PERMISSIONS", lambda r: ", ".join(r.permissions)),
]

Permissions = Annotated[
    list[str] | None,
    typer.Option(
        "--permission",
        "-p",
        help="kind:action, kind:* or *; repeat it or separate with commas (vm:list,vm:get).",
    ),
]
Description = Annotated[str | None, typer.Option("--description", "-d")]


def split_permissions(values: list[str] | None) -> list[str] | None:
    """``["vm:list,vm:get", "image:*"]`` -> ``["vm:list", "vm:get", "image:*"]``."""
    if values is None:
        return None
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


@app.command("list")
def list_roles(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List roles and their permissions."""
    state = state_of(ctx)
    page = state.client().roles.list(limit=limit, offset=offset, sort=sort, q=where, tag=tag)
    print_page(page, COLUMNS, json_output=state.json)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    permission: Permissions = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Create a custom role."""
    from corral.api.errors import InvalidInput

    perms = split_permissions(permission)
    if not perms:
        raise InvalidInput("give the role's permissions with --permission (-p)")
    state = state_of(ctx)
    op = state.client().roles.create(name, permissions=perms, description=description or "")
    finish(state, op, no_wait=no_wait, done=f"Role {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    permission: Annotated[
        list[str] | None,
        typer.Option("--permission", "-p", help="The new permissions (they replace the old)."),
    ] = None,
    description: Description = None,
    no_wait: NoWait = False,
) -> None:
    """Change a custom role; its members' rights change at once."""
    state = state_of(ctx)
    op = state.client().roles.update(
        ref, permissions=split_permissions(permission), description=description
    )
    finish(state, op, no_wait=no_wait, done=f"Role {ref} updated.")


add_show_delete(app, noun="role", collection=lambda c: c.roles)
