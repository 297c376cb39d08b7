"""The API listener serves the operator's certificate (PEM or PKCS#12); bad ones stop the start
with a clear error; agents pin the operator's leaf and report through it."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from corral.api.errors import InvalidInput
from corral.cli.app import app
from corral.main import main as _register_commands  # noqa: F401 (adds server, up)
from corral.server.app import start
from corral.server.db.tables import HostRow
from corral.server.settings import ServerSettings
from corral.util.tls import leaf_pem
from tests.integration.enroll.conftest import tls_stack
from tests.unit.tls.support import operator_chain


def der(pem: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem)


async def served_cert(port: int) -> str:
    return await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port), timeout=5)


async def serve(
    tmp_path: Path,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    pkcs12_file: Path | None = None,
) -> str:
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        port=0,
        admin_password="pw",
        cert_file=cert_file,
        key_file=key_file,
        pkcs12_file=pkcs12_file,
    )
    handle = await start(settings)
    try:
        return await served_cert(handle.settings.port)
    finally:
        await handle.stop()


async def test_pem_certificate_and_key(tmp_path: Path) -> None:
    chain, key, _ = operator_chain(tmp_path / "op")
    served = await serve(tmp_path, cert_file=chain, key_file=key)
    assert der(served) == der(leaf_pem(chain.read_text()))


async def test_pkcs12_with_the_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, _, p12 = operator_chain(tmp_path / "op", password=b"hunter22")
    monkeypatch.setenv("CORRAL_PKCS12_PASSWORD", "hunter22")
    served = await serve(tmp_path, pkcs12_file=p12)
    assert der(served) == der(leaf_pem(chain.read_text()))


async def test_default_is_a_generated_self_signed_certificate(tmp_path: Path) -> None:
    served = await serve(tmp_path)
    assert der(served) == der((tmp_path / "data" / "tls" / "server.crt").read_text())


async def test_a_key_that_does_not_match_stops_the_start(tmp_path: Path) -> None:
    chain, _, _ = operator_chain(tmp_path / "a")
    _, other_key, _ = operator_chain(tmp_path / "b")
    with pytest.raises(InvalidInput, match="does not match"):
        await serve(tmp_path, cert_file=chain, key_file=other_key)


def test_command_line_errors_are_clear(tmp_path: Path) -> None:
    chain, key, p12 = operator_chain(tmp_path / "a")
    _, other_key, _ = operator_chain(tmp_path / "b")
    data = ["--data-dir", str(tmp_path / "data"), "--port", "0", "--host", "127.0.0.1"]
    runner = CliRunner()
    result = runner.invoke(app, ["server", *data, "--cert", str(chain), "--key", str(other_key)])
    assert result.exit_code == 2, result.output
    assert "the TLS key does not match the certificate" in result.output
    result = runner.invoke(app, ["server", *data, "--cert", str(chain)])
    assert result.exit_code == 2 and "--key" in result.output
    both = ["--cert", str(chain), "--key", str(key), "--pkcs12", str(p12)]
    result = runner.invoke(app, ["up", *data, *both])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(app, ["up", *data, "--http", "--pkcs12", str(p12)])
    assert result.exit_code == 2 and "plain HTTP" in result.output


async def test_agents_pin_the_operators_leaf(tmp_path: Path) -> None:
    chain, key, _ = operator_chain(tmp_path / "op")
    server = {"cert_file": chain, "key_file": key}
    async with tls_stack(tmp_path / "data", sim_hosts=1, server=server) as stack:
        assert der(await served_cert(stack.server.settings.port)) == der(
            leaf_pem(chain.read_text())
        )
        runtime = next(iter(stack.agent.runtimes.values()))
        assert runtime.attachment.current is not None
        assert runtime.attachment.current.server_cert_pem == leaf_pem(chain.read_text())
        for _ in range(100):  # heartbeats get through (TLS to the pinned leaf)
            async with stack.server.services.sessionmaker() as s:
                beat_at = await s.scalar(select(HostRow.last_heartbeat_at))
            if beat_at is not None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no heartbeat reached the server")
