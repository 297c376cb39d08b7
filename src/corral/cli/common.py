"""What every command shares: the invocation state, the client, common options, waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from corral.cli import config as cli_config
from corral.cli.output import emit_json, print_detail

if TYPE_CHECKING:
    import httpx

    from corral.sdk import Client, Operation
    from corral.sdk._sync.resources import Listing


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


@dataclass
class CliState:
    """Per-invocation state kept in ``ctx.obj``. Tests pass ``obj=CliState(transport=...)`` to
    ``CliRunner.invoke`` to talk to a fake server; ``force_terminal`` shows progress bars anyway."""

    output: OutputFormat = OutputFormat.table
    transport: httpx.BaseTransport | None = None
    force_terminal: bool | None = None
    _client: Client | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return self.output is OutputFormat.json

    def client(self) -> Client:
        """The SDK client of the saved login (``Unauthenticated`` if none), created once."""
        if self._client is None:
            from corral.sdk import Client

            config = cli_config.load()
            url, token = cli_config.require_login(config)
            self._client = Client(url, token, verify=config.verify(), transport=self.transport)
        return self._client

    def close(self) -> None:
        """Close the client if one was made (called when the command ends)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def state_of(ctx: typer.Context) -> CliState:
    """The ``CliState`` of this invocation (created by the root callback)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


NoWait = Annotated[
    bool, typer.Option("--no-wait", help="Print the operation id and return at once.")
]
Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows per page.")]
Offset = Annotated[int, typer.Option("--offset", min=0, help="Rows to skip.")]
Sort = Annotated[
    str | None, typer.Option("--sort", help="Field to sort on; -field for descending.")
]
Where = Annotated[
    str | None,
    typer.Option(
        "--q",
        "-q",
        help="Conditions, e.g. 'state=running,memory>=1024,host.cluster.name=c1' "
        "(operators = != > >= < <= ~ =in:a|b =null).",
    ),
]
Tags = Annotated[
    list[str] | None, typer.Option("--tag", help="Only items carrying this tag (repeatable).")
]
Ref = Annotated[str, typer.Argument(help="Name or id.", show_default=False)]
Name = Annotated[str, typer.Argument(help="Name of the new resource.", show_default=False)]


def finish(
    state: CliState,
    op: Operation,
    *,
    no_wait: bool,
    done: str | Callable[[Operation], str],
) -> Operation:
    """End a mutating command: with ``--no-wait`` print the operation id (JSON: the operation);
    else wait with a progress bar on stderr and print ``done`` (JSON: the finished operation).

    A failed operation raises its error (the CLI prints it and exits 1). Ctrl-C stops waiting,
    not the operation: the user is told how to wait for it again.
    """
    if no_wait:
        if state.json:
            emit_json(op.model)
        else:
            typer.echo(op.id)
        return op
    try:
        wait_with_progress(state, op)
    except KeyboardInterrupt:
        typer.echo(
            f"\nStopped waiting; operation {op.id} goes on (corral op wait {op.id}).", err=True
        )
        raise typer.Exit(130) from None
    if state.json:
        emit_json(op.model)
    else:
        typer.echo(done if isinstance(done, str) else done(op))
    return op


def wait_with_progress(state: CliState, op: Operation) -> None:
    """``op.wait()``, drawing a transient progress bar when stderr is a terminal."""
    from corral.cli.output import console

    err_console = console(stderr=True, force_terminal=state.force_terminal)
    if op.done or not err_console.is_terminal:
        op.wait()
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(op.type, total=100)

        def update(model: Any) -> None:
            text = f"{model.type} {model.status}" + (f": {model.message}" if model.message else "")
            progress.update(task, completed=model.progress, description=text)

        op.wait(on_progress=update)


def show(state: CliState, model: Any) -> None:
    """Print one resource (table or JSON per ``-o``)."""
    print_detail(model, json_output=state.json)


class _Collection(Protocol):
    def get(self, ref: str) -> Any: ...

    def delete(self, ref: str) -> Operation: ...

    def tag(self, ref: str, *tags: str) -> Operation: ...

    def untag(self, ref: str, *tags: str) -> Operation: ...


def add_show_delete(
    app: typer.Typer,
    *,
    noun: str,
    collection: Callable[[Client], _Collection],
    delete_verb: str = "delete",
) -> None:
    """Register ``show REF``, ``delete REF [--no-wait]`` (or another verb), ``tag REF TAG...``
    and ``untag REF TAG...`` on ``app``."""

    def show_command(ctx: typer.Context, ref: Ref) -> None:
        state = state_of(ctx)
        show(state, collection(state.client()).get(ref))

    def delete_command(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
        state = state_of(ctx)
        op = collection(state.client()).delete(ref)
        finish(state, op, no_wait=no_wait, done=f"{noun[0].upper()}{noun[1:]} {ref} deleted.")

    def tag_command(
        ctx: typer.Context,
        ref: Ref,
        tags: Annotated[list[str], typer.Argument(help="Tags to add.", show_default=False)],
    ) -> None:
        state = state_of(ctx)
        op = collection(state.client()).tag(ref, *tags)
        finish(state, op, no_wait=False, done=f"Tagged {ref}: {', '.join(tags)}.")

    def untag_command(
        ctx: typer.Context,
        ref: Ref,
        tags: Annotated[list[str], typer.Argument(help="Tags to remove.", show_default=False)],
    ) -> None:
        state = state_of(ctx)
        op = collection(state.client()).untag(ref, *tags)
        finish(state, op, no_wait=False, done=f"Untagged {ref}: {', '.join(tags)}.")

    tag_command.__doc__ = f"Add tags to a {noun}."
    untag_command.__doc__ = f"Remove tags from a {noun}."
    app.command("tag")(tag_command)
    app.command("untag")(untag_command)
    show_command.__doc__ = f"Show a {noun}."
    delete_command.__doc__ = f"Delete a {noun}."
    app.command("show")(show_command)
    app.command(delete_verb)(delete_command)


def names_of(listing: Listing[Any], ids: Iterable[str]) -> dict[str, str]:
    """Names of the resources ``ids`` of ``listing`` (one request); empty if the lookup fails
    (e.g. only platform admins may list storage pools): tables show the ids then."""
    from corral.api.errors import CorralError

    wanted = sorted(set(ids))[:1000]
    if not wanted:
        return {}
    try:
        items = listing.select(["id", "name"], q="id=in:" + "|".join(wanted), limit=len(wanted))
    except CorralError:
        return {}
    return {str(item["id"]): str(item["name"]) for item in items}
