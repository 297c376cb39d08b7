"""``corral user``: accounts (platform admins), and one's own profile (``corral user me``)."""

from __future__ import annotations

import sys
from typing import Annotated

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
    show,
    state_of,
)
from corral.cli.output import Column, emit_json, print_page

app = typer.Typer(help="Users: accounts and their projects.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda u: u.name),
    ("ID", lambda u: u.id),
    ("ENABLED", lambda u: u.enabled),
    ("ADMIN", lambda u: u.is_platform_admin),
    ("2FA", lambda u: u.totp_enabled),
    ("EMAIL", lambda u: u.email),
    ("PROJECTS", lambda u: ", ".join(f"{m.project_name}:{m.role}" for m in u.memberships)),
]

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin (one line).")
]


def read_password(from_stdin: bool) -> str:
    """The new password: the first line of stdin, or asked twice without echo."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("New password", hide_input=True, confirmation_prompt=True))


@app.command("list")
def list_users(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only members of this project.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List users with their projects and roles."""
    state = state_of(ctx)
    client = state.client()
    project_id = client.projects.get(project).id if project else None
    page = client.users.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, project_id=project_id
    )
    print_page(page, COLUMNS, json_output=state.json)


@app.command("me")
def me(ctx: typer.Context) -> None:
    """Show your own account and memberships."""
    state = state_of(ctx)
    show(state, state.client().users.me())


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Login name.", show_default=False)],
    email: Annotated[str | None, typer.Option("--email", help="E-mail address.")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="Make a platform admin (all rights everywhere).")
    ] = False,
    password_stdin: PasswordStdin = False,
    no_wait: NoWait = False,
) -> None:
    """Create a user (asks for the password). Add them to projects with
    'corral project add-member'."""
    state = state_of(ctx)
    password = read_password(password_stdin)
    op = state.client().users.create(name, password=password, email=email, is_platform_admin=admin)
    finish(state, op, no_wait=no_wait, done=f"User {name} created ({op.target_id}).")


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    email: Annotated[
        str | None, typer.Option("--email", help="New address; '' removes it.")
    ] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Allow or refuse the user's logins.")
    ] = None,
    admin: Annotated[
        bool | None, typer.Option("--admin/--no-admin", help="Grant or take platform admin.")
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Change a user's e-mail, enable or disable them, grant or take platform admin."""
    state = state_of(ctx)
    op = state.client().users.update(ref, email=email, enabled=enabled, is_platform_admin=admin)
    finish(state, op, no_wait=no_wait, done=f"User {ref} updated.")


@app.command("reset-password")
def reset_password(
    ctx: typer.Context,
    ref: Ref,
    generate: Annotated[
        bool, typer.Option("--generate", help="Have the server make one; it is shown once.")
    ] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a user's password (ends their sessions)."""
    from corral.api.errors import InvalidInput

    if generate and password_stdin:
        raise InvalidInput("give --generate or --password-stdin, not both")
    state = state_of(ctx)
    password = None if generate else read_password(password_stdin)
    generated = state.client().users.reset_password(ref, password)
    if state.json:
        emit_json({"user": ref, "password": generated})
    elif generated is not None:
        typer.echo(f"New password of {ref} (shown once): {generated}")
    else:
        typer.echo(f"Password of {ref} changed.")


add_show_delete(app, noun="user", collection=lambda c: c.users)
