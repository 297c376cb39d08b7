"""``corral server``: run the management server alone (agents are added with ``corral host add``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from corral.api.errors import CorralError
from corral.server.settings import ServerSettings, default_data_dir
from corral.util import aio
from corral.util.redact import install_log_redaction

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


def fail(exc: CorralError) -> typer.Exit:
    """Print a start-up error (a bad certificate, conflicting options) for the operator."""
    details = "".join(f"\n  {k}: {v}" for k, v in exc.context.items())
    typer.echo(f"error: {exc.message}{details}", err=True)
    return typer.Exit(2)


async def _serve(settings: ServerSettings) -> None:
    from corral.server.app import start

    handle = await start(settings)
    print(f"Corral server listening on {handle.url}")
    if handle.admin_password:
        print(f"Admin password (shown once): {handle.admin_password}")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await handle.stop()


def server_command(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="state directory")] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port")] = 8443,
    http: Annotated[bool, typer.Option("--http", help="plain HTTP instead of HTTPS")] = False,
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="URL agents use to reach this server")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    cert: CertOption = None,
    key: KeyOption = None,
    pkcs12: Pkcs12Option = None,
) -> None:
    """Run the Corral management server (database: SQLite in the data dir, or CORRAL_DATABASE_URL).

    HTTPS by default, with --cert/--key or --pkcs12, else a self-signed certificate generated at
    first start; --http for plain HTTP."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_log_redaction()  # after basicConfig: its handler gets the filter too
    try:
        settings = ServerSettings(
            data_dir=data_dir or default_data_dir(),
            host=host,
            port=port,
            tls=not http,
            public_url=public_url,
            cert_file=cert,
            key_file=key,
            pkcs12_file=pkcs12,
        )
        aio.run(_serve(settings))
    except CorralError as exc:
        raise fail(exc) from exc
