"""``corral audit``: read the audit log (list, show, export as CSV or JSON)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.accesskey import parse_when
from corral.cli.common import Limit, Offset, Sort, show, state_of
from corral.cli.output import Column, emit_json, print_page

app = typer.Typer(
    help="The audit log: who changed what, when, from where, and how it ended.",
    no_args_is_help=True,
)

COLUMNS: list[Column] = [
    ("ID", lambda e: e.id),
    ("TIME", lambda e: e.started_at),
    ("ACTOR", lambda e: e.actor_name),
    ("ACTION", lambda e: e.action),
    ("TARGET", lambda e: e.target_id),
    ("RESULT", lambda e: e.result),
    ("STATUS", lambda e: e.status_code),
    ("IP", lambda e: e.client_ip),
    ("ERROR", lambda e: e.error_message or e.error_code),
]


class Result(StrEnum):
    success = "success"
    failure = "failure"


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


Query = Annotated[
    str,
    typer.Option(
        "--q",
        "--query",
        metavar="COND",
        help="Conditions, e.g. 'action=vm.create,status>=400' (fields of 'corral audit show').",
    ),
]
Since = Annotated[
    str | None,
    typer.Option(
        "--since", metavar="WHEN", help="From this time: ISO-8601 (naive: UTC) or an age (2h, 7d)."
    ),
]
Until = Annotated[
    str | None,
    typer.Option("--until", metavar="WHEN", help="Before this time: ISO-8601 or an age (1h)."),
]
Action = Annotated[
    str | None,
    typer.Option("--action", help="Action name, e.g. vm.create or auth.login; * matches any."),
]
User = Annotated[
    str | None, typer.Option("--user", help="Name of the user who acted; * matches any.")
]
ResultOption = Annotated[
    Result | None, typer.Option("--result", help="success or failure.", case_sensitive=False)
]


def query_of(q: str, action: str | None, user: str | None, result: Result | None) -> str:
    """``q`` ANDed with the options: ``field="value"``, or ``field~"pattern"`` when the value
    has a ``*``."""
    from corral.sdk._sync.audit import quoted  # here: the CLI starts without loading the SDK

    conds = [q.strip()] if q.strip() else []
    for field, value in (("action", action), ("actor_name", user), ("result", result)):
        if value is not None:
            op = "~" if "*" in value else "="
            conds.append(f"{field}{op}{quoted(str(value))}")
    return ",".join(conds)


def _time(text: str | None) -> str | None:
    return None if text is None else parse_when(text, future=False).isoformat()


@app.command("list")
def list_events(
    ctx: typer.Context,
    q: Query = "",
    since: Since = None,
    until: Until = None,
    action: Action = None,
    user: User = None,
    result: ResultOption = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
) -> None:
    """List audit records, newest first."""
    state = state_of(ctx)
    page = state.client().audit.list(
        query_of(q, action, user, result),
        since=_time(since),
        until=_time(until),
        sort=sort,
        limit=limit,
        offset=offset,
    )
    print_page(page, COLUMNS, json_output=state.json)


@app.command("show")
def show_event(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(help="Record id.", show_default=False)],
) -> None:
    """Show one audit record (with its request summary)."""
    state = state_of(ctx)
    show(state, state.client().audit.get(event_id))


@app.command("export")
def export(
    ctx: typer.Context,
    format: Annotated[
        ExportFormat, typer.Option("--format", help="csv or json.", case_sensitive=False)
    ] = ExportFormat.csv,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Write here (whole or not at all) instead of stdout.",
            dir_okay=False,
        ),
    ] = None,
    q: Query = "",
    since: Since = None,
    until: Until = None,
    action: Action = None,
    user: User = None,
    result: ResultOption = None,
) -> None:
    """Export audit records, oldest first, as CSV (a header line, one line per record) or as a
    JSON array; streamed, so any size works."""
    state = state_of(ctx)
    audit = state.client().audit
    cond, start, end = query_of(q, action, user, result), _time(since), _time(until)
    if file is None:
        out = typer.get_binary_stream("stdout")
        for chunk in audit.export(format.value, q=cond, since=start, until=end):
            out.write(chunk)
            out.flush()
        return
    written = audit.export_to(file, format.value, q=cond, since=start, until=end)
    if state.json:
        emit_json({"file": str(file), "format": format.value, "bytes": written})
    else:
        typer.echo(f"Exported {written} bytes to {file}.")
