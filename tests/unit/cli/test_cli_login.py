"""``corral login`` / ``logout``: passwords, saved config (0600), trust on first use over real TLS."""

from __future__ import annotations

import http.server
import json
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk.testing import FakeCorral
from corral.util.tls import ensure_self_signed, fingerprint

from .conftest import URL, Corral


def _saved(config_dir: Path) -> dict[str, object]:
    path = config_dir / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data: dict[str, object] = json.loads(path.read_text())
    return data


def test_login_prompts_for_the_password_and_saves_the_token(
    fake: FakeCorral, config_dir: Path
) -> None:
    result = Corral(fake)("login", URL, "--user", "admin", input="secret\n")
    assert result.exit_code == 0, result.output
    assert "Password" in result.output and "secret" not in result.output
    saved = _saved(config_dir)
    assert saved["url"] == URL and saved["username"] == "admin"
    assert saved["token"] in fake.state.tokens
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert Corral(fake)("zone", "list").exit_code == 0


def test_password_from_the_environment_or_stdin(
    fake: FakeCorral, config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Corral(fake)("login", URL, "--password-stdin", input="secret\n").exit_code == 0
    monkeypatch.setenv("CORRAL_PASSWORD", "secret")
    assert Corral(fake)("login", URL).exit_code == 0
    assert len(fake.state.tokens) == 2


def test_a_bad_password_exits_1_and_saves_nothing(fake: FakeCorral, config_dir: Path) -> None:
    result = Corral(fake)("login", URL, "--password-stdin", input="wrong\n")
    assert result.exit_code == 1
    assert result.stderr == "Error [unauthenticated]: bad user name or password\n"
    assert not (config_dir / "config.json").exists()


def test_logout_forgets_the_login(corral: Corral, config_dir: Path) -> None:
    assert corral("logout").stdout == "Logged out.\n"
    assert not (config_dir / "config.json").exists()
    assert corral("logout").stdout == "Not logged in.\n"
    assert corral("zone", "list").exit_code == 1


class _TlsFake:
    """A real HTTPS server on 127.0.0.1 answering with a ``FakeCorral``."""

    def __init__(self, fake: FakeCorral, cert: Path, key: Path, port: int = 0) -> None:
        handler = self._handler_class(fake)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def _handler_class(fake: FakeCorral) -> type[http.server.BaseHTTPRequestHandler]:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = httpx.Request(
                    self.command,
                    f"https://fake{self.path}",
                    headers=dict(self.headers),
                    content=body,
                )
                response = fake.handle(request)
                self.send_response(response.status_code)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def tls_files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    cert, key = tmp_path / "tls" / "server.pem", tmp_path / "tls" / "server.key"
    ensure_self_signed(cert, key, "corral-test")
    yield cert, key


def _cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), obj=CliState(), input=input)


def test_https_login_pins_the_server_certificate(
    fake: FakeCorral, config_dir: Path, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = tls_files
    server = _TlsFake(fake, cert, key)
    try:
        result = _cli("login", server.url, "--password-stdin", input="secret\n")
        assert result.exit_code == 0, result.output
        assert fingerprint(cert.read_text()) in result.stderr
        saved = _saved(config_dir)
        assert Path(str(saved["cert"])).read_text() == cert.read_text()
        listing = _cli("zone", "list")  # verified against the pinned certificate
        assert listing.exit_code == 0, listing.output
        again = _cli("login", server.url, "--password-stdin", input="secret\n")
        assert again.exit_code == 0 and "fingerprint" not in again.stderr
    finally:
        server.close()
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    ensure_self_signed(other_cert, other_key, "impostor")
    impostor = _TlsFake(fake, other_cert, other_key, port=server.port)
    try:
        refused = _cli("zone", "list")
        assert refused.exit_code == 1
        assert "certificate verify failed" in refused.stderr
        relogin = _cli("login", impostor.url, "--password-stdin", input="secret\n")
        assert relogin.exit_code == 1
        assert relogin.stderr.startswith("Error [forbidden]: the certificate of")
        insecure = _cli("login", impostor.url, "--insecure", "--password-stdin", input="secret\n")
        assert insecure.exit_code == 0, insecure.output
        assert _saved(config_dir)["insecure"] is True
        assert _cli("zone", "list").exit_code == 0
    finally:
        impostor.close()


def test_login_with_a_ca_file(
    fake: FakeCorral, config_dir: Path, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    server = _TlsFake(fake, cert, key)
    try:
        result = _cli("login", server.url, "--ca", str(cert), "--password-stdin", input="secret\n")
        assert result.exit_code == 0, result.output
        assert "fingerprint" not in result.stderr
        assert _saved(config_dir)["ca"] == str(cert)
        assert _cli("zone", "list").exit_code == 0
    finally:
        server.close()
