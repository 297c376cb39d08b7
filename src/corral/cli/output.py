"""How the CLI prints: rich tables and key/value views, JSON with ``-o json``, errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from corral.api.common import Page
    from corral.api.errors import CorralError

Column = tuple[str, Callable[[Any], object]]
"""A table column: header and how to get the cell from a model."""


_UNBOUNDED_WIDTH = 100_000
"""Width of a console that is not a terminal: lines as long as their content."""


def console(*, stderr: bool = False, force_terminal: bool | None = None) -> Console:
    """A rich console on stdout (or stderr). When it is not a terminal (a pipe, a file), lines are
    as long as they need: a script reading ``corral vm list`` gets every cell whole, never cut to 80
    columns."""
    from rich.console import Console

    out = Console(stderr=stderr, force_terminal=force_terminal, highlight=False)
    if not out.is_terminal:
        out.width = _UNBOUNDED_WIDTH
    return out


def emit_json(data: Any) -> None:
    """Print ``data`` (a model, a list of models or plain JSON data) as indented JSON."""
    sys.stdout.write(json.dumps(_jsonable(data), indent=2) + "\n")


def _jsonable(data: Any) -> Any:
    if hasattr(data, "model_dump"):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [_jsonable(item) for item in data]
    return data


def mib(value: int) -> str:
    return f"{value} MiB"


def gib(value: float) -> str:
    return f"{value:g} GiB"


def human_bytes(value: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def cell(value: object) -> str:
    """How one value reads in a table or a detail view (times in the local time zone)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def print_page(page: Page[Any], columns: Sequence[Column], *, json_output: bool) -> None:
    """A list page as a table (with a note if more items exist) or as the page's JSON."""
    if json_output:
        emit_json(page)
        return
    print_table(page.items, columns)
    shown_to = page.offset + len(page.items)
    if page.offset or shown_to < page.total:
        hint = f" (use --offset {shown_to} for more)" if shown_to < page.total else ""
        typer.echo(f"{page.offset + 1}-{shown_to} of {page.total}{hint}", err=True)


def print_table(items: Sequence[Any], columns: Sequence[Column]) -> None:
    """Rows of ``items`` under ``columns``."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for index, (header, _) in enumerate(columns):
        last = index == len(columns) - 1
        table.add_column(header, no_wrap=not last, overflow="fold" if last else "ellipsis")
    for item in items:
        table.add_row(*(cell(get(item)) for _, get in columns), style=None)
    console().print(table)


def _fields(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            rows.extend(_fields(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows


def _unit(key: str, value: Any) -> str:
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, int) and not isinstance(value, bool):
        if name.endswith("_mb") or "_mb_" in name:
            return mib(value)
        if name.endswith("_bytes"):
            return f"{human_bytes(value)} ({value} bytes)"
    if isinstance(value, int | float) and (name.endswith("_gb") or "_gb_" in name):
        return gib(value)
    return cell(value)


def print_detail(model: BaseModel, *, json_output: bool) -> None:
    """One resource as ``field  value`` lines (nested models flattened) or as JSON."""
    if json_output:
        emit_json(model)
        return
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in _fields(model.model_dump(mode="json")):
        if isinstance(value, dict | list):
            value = json.dumps(value) if value else None
        grid.add_row(key, _unit(key, value))
    console().print(grid)


def print_error(err: CorralError) -> None:
    """``Error [code]: message`` on stderr, then the context (each host's reasons for
    ``no_host_available``)."""
    code = getattr(err, "remote_code", err.code)
    typer.echo(f"Error [{code}]: {err.message}", err=True)
    context = dict(err.context)
    hosts = context.pop("hosts", None) if code == "no_host_available" else None
    if hosts is not None:
        typer.echo("Hosts:", err=True)
        for name, reasons in _host_reasons(hosts):
            typer.echo(f"  {name}: {'; '.join(reasons) or 'no reason given'}", err=True)
    if context.get("errors") == [err.message]:
        del context["errors"]  # one problem: the message says it all
    for key, value in context.items():
        text = value if isinstance(value, str) else json.dumps(value)
        typer.echo(f"  {key}: {text}", err=True)


def _host_reasons(hosts: Any) -> list[tuple[str, list[str]]]:
    """``{"h1": ["why"...]}`` or ``[{"host_name"/"name"/"host": "h1", "reasons"/"reason": ...}]``
    (the server sends ``{"host_id", "host_name", "reasons"}``)."""
    if isinstance(hosts, dict):
        items = list(hosts.items())
    elif isinstance(hosts, list):
        items = [
            (
                str(
                    h.get("host_name")
                    or h.get("name")
                    or h.get("host")
                    or h.get("host_id")
                    or h.get("id")
                    or "?"
                ),
                h.get("reasons", h.get("reason", [])),
            )
            if isinstance(h, dict)
            else (str(h), [])
            for h in hosts
        ]
    else:
        return [("hosts", [str(hosts)])]
    return [
        (str(name), [str(r) for r in reasons] if isinstance(reasons, list) else [str(reasons)])
        for name, reasons in items
    ]
