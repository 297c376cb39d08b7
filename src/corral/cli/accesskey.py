"""``corral accesskey``: AccessKeys, the credentials programs sign requests with."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from corral.cli.common import state_of
from corral.cli.output import Column, emit_json, print_detail, print_table

app = typer.Typer(
    help="AccessKeys: credentials for programs (Client(url, access_key=(id, secret))).",
    no_args_is_help=True,
)

COLUMNS: list[Column] = [
    ("ID", lambda k: k.id),
    ("ENABLED", lambda k: k.enabled),
    ("CREATED", lambda k: k.created_at),
    ("LAST USED", lambda k: k.last_used_at),
    ("EXPIRES", lambda k: k.expires_at),
    ("USER", lambda k: k.user_id),
    ("DESCRIPTION", lambda k: k.description),
]

SECRET_WARNING = (
    "Warning: the secret is shown this once and cannot be shown again; store it now "
    "(lost: delete the key and create another)."
)

KeyId = Annotated[str, typer.Argument(help="AccessKey ID (CK...).", show_default=False)]

_RELATIVE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, *, future: bool) -> datetime:
    """``2025-01-31``, ``2025-01-31T12:00:00+02:00`` (naive: UTC) or a duration from now:
    ``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (later than now if ``future``, else earlier).
    Anything else is a usage error."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        delta = timedelta(**{_UNITS[relative[2]]: int(relative[1])})
        now = datetime.now(UTC)
        return now + delta if future else now - delta
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give an ISO-8601 date/time (2025-01-31T12:00Z) or a duration (90d, 12h)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """List your AccessKeys (platform admins: everyone's); secrets are never shown."""
    state = state_of(ctx)
    keys = state.client().access_keys.list(limit=1000).items
    if state.json:
        emit_json(keys)
    else:
        print_table(keys, COLUMNS)


@app.command("create")
def create(
    ctx: typer.Context,
    description: Annotated[
        str, typer.Option("--description", "-d", help="What the key is for.")
    ] = "",
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires",
            metavar="WHEN",
            help="End of validity: ISO-8601 date/time (naive: UTC) or a duration (90d, 12h).",
        ),
    ] = None,
) -> None:
    """Create an AccessKey for yourself; prints its ID and secret, shown this once."""
    state = state_of(ctx)
    expires_at = parse_when(expires, future=True) if expires is not None else None
    key = state.client().access_keys.create(description, expires_at=expires_at)
    if state.json:
        emit_json(key)
    else:
        typer.echo(f"AccessKey ID: {key.id}")
        typer.echo(f"Secret:       {key.secret}")
    typer.echo(SECRET_WARNING, err=True)


def _set_enabled(ctx: typer.Context, key_id: str, enabled: bool) -> None:
    state = state_of(ctx)
    key = state.client().access_keys.update(key_id, enabled=enabled)
    if state.json:
        print_detail(key, json_output=True)
    else:
        typer.echo(f"AccessKey {key.id} {'enabled' if enabled else 'disabled'}.")


@app.command("enable")
def enable(ctx: typer.Context, key_id: KeyId) -> None:
    """Enable an AccessKey again."""
    _set_enabled(ctx, key_id, True)


@app.command("disable")
def disable(ctx: typer.Context, key_id: KeyId) -> None:
    """Disable an AccessKey: requests signed with it are refused from now on."""
    _set_enabled(ctx, key_id, False)


@app.command("delete")
def delete(ctx: typer.Context, key_id: KeyId) -> None:
    """Delete an AccessKey for good."""
    state = state_of(ctx)
    state.client().access_keys.delete(key_id)
    if state.json:
        emit_json({"id": key_id, "deleted": True})
    else:
        typer.echo(f"AccessKey {key_id} deleted.")
