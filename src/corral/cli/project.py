"""``corral project``: projects (tenants) and their members."""

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

app = typer.Typer(help="Projects (tenants) and their members.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda p: p.name),
    ("ID", lambda p: p.id),
    ("SHARED", lambda p: p.share_resources),
    ("CREATED", lambda p: p.created_at),
    ("DESCRIPTION", lambda p: p.description),
]

MEMBER_COLUMNS: list[Column] = [
    ("USER", lambda m: m.username),
    ("USER ID", lambda m: m.user_id),
    ("ROLE", lambda m: m.role),
    ("SINCE", lambda m: m.created_at),
]

Description = Annotated[str | None, typer.Option("--description", "-d")]
User = Annotated[str, typer.Argument(help="User name or id.", show_default=False)]
Role = Annotated[
    str, typer.Option("--role", "-r", help="Role name or id (see 'corral role list').")
]


@app.command("list")
def list_projects(
    ctx: typer.Context,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List your projects (platform admins: all)."""
    state = state_of(ctx)
    page = state.client().projects.list(limit=limit, offset=offset, sort=sort, q=where, tag=tag)
    print_page(page, COLUMNS, json_output=state.json)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    description: Description = None,
    share_resources: Annotated[
        bool,
        typer.Option("--share-resources", help="Every member sees every resource of it."),
    ] = False,
    no_wait: NoWait = False,
) -> None:
    """Create a project (platform admins)."""
    state = state_of(ctx)
    op = state.client().projects.create(
        name, description=description or "", share_resources=share_resources
    )
    finish(state, op, no_wait=no_wait, done=f"Project {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    description: Description = None,
    share_resources: Annotated[
        bool | None,
        typer.Option(
            "--share-resources/--no-share-resources",
            help="Whether every member sees every resource of the project.",
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Change a project's description or sharing (platform admins)."""
    state = state_of(ctx)
    op = state.client().projects.update(
        ref, description=description, share_resources=share_resources
    )
    finish(state, op, no_wait=no_wait, done=f"Project {ref} updated.")


@app.command("members")
def members(
    ctx: typer.Context,
    ref: Ref,
    role: Annotated[str | None, typer.Option("--role", "-r", help="Only this role.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
) -> None:
    """List the members of a project and their roles."""
    state = state_of(ctx)
    page = state.client().members.list(ref, limit=limit, offset=offset, sort=sort, role=role)
    print_page(page, MEMBER_COLUMNS, json_output=state.json)


@app.command("add-member")
def add_member(
    ctx: typer.Context, ref: Ref, user: User, role: Role = "member", no_wait: NoWait = False
) -> None:
    """Give a user a role in a project."""
    state = state_of(ctx)
    op = state.client().members.add(ref, user, role)
    finish(state, op, no_wait=no_wait, done=f"{user} is now {role} in {ref}.")


@app.command("update-member")
def update_member(
    ctx: typer.Context, ref: Ref, user: User, role: Role, no_wait: NoWait = False
) -> None:
    """Change a member's role."""
    state = state_of(ctx)
    op = state.client().members.update(ref, user, role)
    finish(state, op, no_wait=no_wait, done=f"{user} is now {role} in {ref}.")


@app.command("remove-member")
def remove_member(ctx: typer.Context, ref: Ref, user: User, no_wait: NoWait = False) -> None:
    """Take a user out of a project."""
    state = state_of(ctx)
    op = state.client().members.remove(ref, user)
    finish(state, op, no_wait=no_wait, done=f"{user} removed from {ref}.")


add_show_delete(app, noun="project", collection=lambda c: c.projects)
