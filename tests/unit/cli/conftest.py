"""Fixtures of the CLI unit tests: a fake server, a private config dir, a runner bound to both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.cli import config as cli_config
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import Client
from corral.sdk.testing import FakeCorral

URL = "http://corral.test"


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config dir and no CORRAL_* variables from the outside."""
    path = tmp_path / "config"
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(path))
    for var in ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables as wide as ids need
    return path


@pytest.fixture
def fake() -> FakeCorral:
    return FakeCorral(username="admin", password="secret")


class Corral:
    """Runs ``corral ARGS`` in-process against the fake server."""

    def __init__(self, fake: FakeCorral) -> None:
        self.fake = fake

    def __call__(
        self, *args: str, input: str | None = None, force_terminal: bool | None = None
    ) -> Result:
        state = CliState(transport=self.fake.transport, force_terminal=force_terminal)
        return CliRunner().invoke(app, list(args), obj=state, input=input)


@pytest.fixture
def corral(fake: FakeCorral) -> Corral:
    """The CLI, logged in to the fake server."""
    cli_config.save(cli_config.Config(url=URL, token=fake.login_token(), username="admin"))
    return Corral(fake)


@pytest.fixture
def seeded(fake: FakeCorral, tmp_path: Path) -> Iterator[FakeCorral]:
    """The fake with zone z1, cluster c1, host h1, ready image img and offering small."""
    with Client(URL, fake.login_token(), transport=fake.transport) as client:
        client.zones.create("z1").wait()
        client.clusters.create("c1", zone="z1").wait()
        client.hosts.add("https://h1:7070", "c1", name="h1").wait()
        disk = tmp_path / "img.qcow2"
        disk.write_bytes(b"QFI\xfb" + bytes(100))
        client.images.import_file("img", disk).wait()
        client.offerings.create("small", cpus=1, memory_mb=512, disk_gb=1).wait()
    yield fake
