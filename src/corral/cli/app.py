"""The ``corral`` Typer app: global options, error reporting, exit codes, the sub-commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from corral.cli import (
    accesskey,
    audit,
    auth,
    cluster,
    host,
    image,
    offering,
    op,
    pool,
    port_group,
    project,
    quota,
    recycle,
    role,
    security_group,
    snapshot,
    subnet,
    switch,
    user,
    vm,
    volume,
    zone,
)
from corral.cli.common import CliState, OutputFormat

EXIT_FAILED = 1
EXIT_USAGE = 2

_OUTPUT_FLAGS = ("-o", "--output")

_LAZY_COMMANDS: dict[str, Callable[[], Callable[..., Any]]] = {}


def add_lazy_command(name: str, load: Callable[[], Callable[..., Any]]) -> None:
    """Register ``corral NAME``, a Typer command function that ``load()`` imports only when the
    command runs or ``--help`` lists it: the roles (``server``, ``agent``) cost every other command
    a third of its start-up time otherwise."""
    _LAZY_COMMANDS[name] = load


def hoist_output_option(args: list[str]) -> list[str]:
    """Move ``-o/--output FORMAT`` given after a sub-command to the front, where the root command
    parses it: ``corral vm list -o json`` works like ``corral -o json vm list``."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _OUTPUT_FLAGS and i + 1 < len(args):
            moved.extend(args[i : i + 2])
            i += 2
            continue
        if arg.startswith("--output=") or (arg.startswith("-o") and len(arg) > 2):
            moved.append(arg)
        else:
            rest.append(arg)
        i += 1
    return moved + rest


class CorralGroup(TyperGroup):
    """The root command: ``-o`` anywhere, and ``CorralError``s printed as ``Error [code]: message``
    with exit status 1 (2 for ``invalid_input``, like other usage errors)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_output_option(args))

    def list_commands(self, ctx: Any) -> list[str]:
        """Plain commands, then the lazy ones, then the command groups (``zone``, ``vm``...)."""
        names = super().list_commands(ctx)
        plain = [n for n in names if not isinstance(self.commands[n], TyperGroup)]
        lazy = [n for n in _LAZY_COMMANDS if n not in self.commands]
        return plain + lazy + [n for n in names if n not in plain]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY_COMMANDS:
            single = typer.Typer(pretty_exceptions_enable=False)
            single.command(cmd_name)(_LAZY_COMMANDS[cmd_name]())
            command = typer.main.get_command(single)
            self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from corral.api.errors import CorralError, InvalidInput

            if not isinstance(exc, CorralError):
                raise
            from corral.cli.output import print_error

            print_error(exc)
            raise typer.Exit(EXIT_USAGE if isinstance(exc, InvalidInput) else EXIT_FAILED) from exc


app = typer.Typer(
    name="corral",
    cls=CorralGroup,
    help="Corral: run virtual machines on a pool of KVM hosts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    output: Annotated[
        OutputFormat,
        typer.Option("--output", "-o", help="table (default) or json.", case_sensitive=False),
    ] = OutputFormat.table,
) -> None:
    """Corral: run virtual machines on a pool of KVM hosts."""
    state = ctx.obj if isinstance(ctx.obj, CliState) else CliState()
    state.output = output
    ctx.obj = state
    ctx.call_on_close(state.close)


app.command("login")(auth.login)
app.command("logout")(auth.logout)
app.add_typer(zone.app, name="zone")
app.add_typer(cluster.app, name="cluster")
app.add_typer(host.app, name="host")
app.add_typer(image.app, name="image")
app.add_typer(offering.app, name="offering")
app.add_typer(pool.app, name="pool")
app.add_typer(switch.app, name="switch")
app.add_typer(port_group.app, name="port-group")
app.add_typer(subnet.app, name="subnet")
app.add_typer(vm.app, name="vm")
app.add_typer(volume.app, name="volume")
app.add_typer(snapshot.app, name="snapshot")
app.add_typer(security_group.app, name="security-group")
app.add_typer(recycle.app, name="recycle")
app.add_typer(recycle.policy_app, name="deletion-policy")
app.add_typer(op.app, name="op")
app.add_typer(user.app, name="user")
app.add_typer(project.app, name="project")
app.add_typer(role.app, name="role")
app.add_typer(quota.app, name="quota")
app.add_typer(accesskey.app, name="accesskey")
app.add_typer(audit.app, name="audit")
