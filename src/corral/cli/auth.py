"""``corral login`` / ``corral logout``: get a token, pin the server certificate, save both."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli import config as cli_config
from corral.cli.common import state_of

if TYPE_CHECKING:
    import ssl


def login(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Server URL, e.g. https://corral.example:8443")],
    user: Annotated[str, typer.Option("--user", "-u", help="User name.")] = "admin",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify the server's certificate.")
    ] = False,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", exists=True, dir_okay=False, help="Trust this CA file instead."),
    ] = None,
    otp: Annotated[
        str | None,
        typer.Option("--otp", help="Two-factor code (TOTP or recovery code); asked if needed."),
    ] = None,
) -> None:
    """Log in and save the server URL and token.

    Over https without --ca or --insecure, the server's certificate is fetched, its SHA-256
    fingerprint printed and the certificate pinned (trust on first use). The password is asked for
    unless CORRAL_PASSWORD is set or --password-stdin is given; an account with two-factor auth
    is asked for its code (or give --otp, or CORRAL_OTP).
    """
    from corral.api.errors import InvalidInput, OtpRequired
    from corral.sdk import Client

    state = state_of(ctx)
    url = url.rstrip("/")
    if "://" not in url:
        url = "https://" + url
    if insecure and ca is not None:
        raise InvalidInput("give --insecure or --ca, not both")
    saved = cli_config.load_saved()
    config = cli_config.Config(url=url, username=user, insecure=insecure)
    if ca is not None:
        config.ca = str(ca.resolve())
    verify: bool | str | ssl.SSLContext = config.verify()
    pem = None
    if url.startswith("https://") and not insecure and ca is None:
        from corral.util.tls import pinned_context

        pem = _trust_on_first_use(url, saved)
        verify = pinned_context(pem)
    password = _password(password_stdin)  # after the fingerprint was shown
    try:
        with Client.login(url, user, password, otp=otp, verify=verify,
                          transport=state.transport) as client:  # fmt: skip
            config.token = client.token
    except OtpRequired:
        if otp is not None:
            raise
        code = os.environ.get("CORRAL_OTP") or str(typer.prompt("Two-factor code"))
        with Client.login(url, user, password, otp=code, verify=verify,
                          transport=state.transport) as client:  # fmt: skip
            config.token = client.token
    if pem is not None:
        config.cert = str(cli_config.save_pinned_cert(pem))
    path = cli_config.save(config)
    typer.echo(f"Logged in to {url} as {user} (saved in {path}).")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if env := os.environ.get("CORRAL_PASSWORD"):
        return env
    return str(typer.prompt("Password", hide_input=True))


def _trust_on_first_use(url: str, saved: cli_config.Config) -> str:
    """The server's certificate; refuses one that differs from the one pinned for this URL."""
    from corral.api.errors import CorralError, Forbidden
    from corral.util.tls import fetch_server_cert, fingerprint

    try:
        pem = fetch_server_cert(url)
    except OSError as exc:
        raise CorralError(f"cannot reach {url}: {exc}", url=url) from exc
    digest = fingerprint(pem)
    if saved.url == url and saved.cert and Path(saved.cert).exists():
        if fingerprint(Path(saved.cert).read_text()) != digest:
            raise Forbidden(
                f"the certificate of {url} changed since the last login (now {digest}). If this is "
                "expected, run 'corral logout' and log in again; otherwise someone may be "
                "intercepting the connection.",
                url=url,
            )
        return pem
    typer.echo(f"Server certificate SHA-256 fingerprint:\n  {digest}", err=True)
    typer.echo("Trusting it for this server from now on (trust on first use).", err=True)
    return pem


def logout() -> None:
    """Forget the saved token and pinned certificate."""
    if cli_config.clear():
        typer.echo("Logged out.")
    else:
        typer.echo("Not logged in.")
