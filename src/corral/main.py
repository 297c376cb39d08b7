"""The ``corral`` command: the user CLI plus the ``server``, ``agent`` and ``up`` roles."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli.app import add_lazy_command, app
from corral.util import aio

CertOption = Annotated[
    Path | None, typer.Option("--cert", help="API certificate, PEM (the chain may follow it)")
]
KeyOption = Annotated[
    Path | None, typer.Option("--key", help="private key of --cert, PEM, unencrypted")
]
Pkcs12Option = Annotated[
    Path | None,
    typer.Option(
        "--pkcs12",
        help="API certificate and key in a PKCS#12 file (password: $CORRAL_PKCS12_PASSWORD)",
    ),
]


@app.command("up")
def up_command(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="state directory")] = None,
    port: Annotated[int, typer.Option("--port", help="API port")] = 8443,
    agent_port: Annotated[int, typer.Option("--agent-port", help="local agent port")] = 7070,
    host: Annotated[str, typer.Option("--host", help="API listen address")] = "0.0.0.0",
    http: Annotated[bool, typer.Option("--http", help="plain HTTP instead of HTTPS")] = False,
    driver: Annotated[
        str, typer.Option("--driver", help="auto (libvirt if reachable), libvirt or simulator")
    ] = "auto",
    sim_hosts: Annotated[int, typer.Option("--sim-hosts", help="simulated hosts")] = 1,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    cert: CertOption = None,
    key: KeyOption = None,
    pkcs12: Pkcs12Option = None,
) -> None:
    """Run the management server and a local agent in one process (embedded SQLite).

    HTTPS by default, with --cert/--key or --pkcs12, else a self-signed certificate generated at
    first start; --http for plain HTTP."""
    if driver not in ("auto", "libvirt", "simulator"):
        raise typer.BadParameter("must be auto, libvirt or simulator", param_hint="--driver")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from corral.util.redact import install_log_redaction

    install_log_redaction()  # after basicConfig: its handler gets the filter too
    from corral.api.errors import CorralError
    from corral.server.cli import fail
    from corral.server.settings import default_data_dir
    from corral.up import run_up

    tls_files = {"cert_file": cert, "key_file": key, "pkcs12_file": pkcs12}
    try:
        aio.run(
            run_up(
                data_dir=data_dir or default_data_dir(),
                port=port,
                agent_port=agent_port,
                host=host,
                tls=not http,
                driver=driver,
                sim_hosts=sim_hosts,
                server_overrides={k: v for k, v in tls_files.items() if v is not None},
            )
        )
    except CorralError as exc:
        raise fail(exc) from exc


def _server_command() -> Callable[..., Any]:
    from corral.server.cli import server_command

    return server_command


def _agent_command() -> Callable[..., Any]:
    from corral.agent.cli import agent_command

    return agent_command


add_lazy_command("server", _server_command)
add_lazy_command("agent", _agent_command)


def main() -> None:
    app()
