"""Fixtures of the SDK unit tests: a fake server and clients bound to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.sdk import AsyncClient, Client
from corral.sdk.testing import FakeCorral

URL = "http://corral.test"


@pytest.fixture
def fake() -> FakeCorral:
    return FakeCorral(username="admin", password="secret")


@pytest.fixture
def client(fake: FakeCorral) -> Iterator[Client]:
    with Client(URL, fake.login_token(), transport=fake.transport) as c:
        yield c


@pytest.fixture
async def aclient(fake: FakeCorral) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(URL, fake.login_token(), transport=fake.transport) as c:
        yield c


@pytest.fixture
def seeded(client: Client, tmp_path: Path) -> Client:
    """``client`` on a server with zone z1, cluster c1, host h1, ready image img, offering small."""
    client.zones.create("z1").wait()
    client.clusters.create("c1", zone="z1").wait()
    client.hosts.add("https://h1:7070", "c1", name="h1").wait()
    disk = tmp_path / "img.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(100))
    client.images.import_file("img", disk).wait()
    client.offerings.create("small", cpus=1, memory_mb=512, disk_gb=1).wait()
    return client
