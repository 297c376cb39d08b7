"""``corral server``: run the management server alone (agents are added with ``corral host add``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from corral.server.settings import ServerSettings, default_data_dir
from corral.util import aio


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
) -> None:
    """Run the Corral management server (database: SQLite in the data dir, or CORRAL_DATABASE_URL)."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = ServerSettings(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        tls=not http,
        public_url=public_url,
    )
    aio.run(_serve(settings))
