"""The asyncio client, and that the generated sync client is up to date with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.api.errors import NoHostAvailable, NotFound, Unauthenticated
from corral.api.operations import OperationStatus
from corral.sdk import AsyncClient
from corral.sdk import _unasync as unasync
from corral.sdk.testing import FakeCorral

URL = "http://corral.test"


async def test_async_login_and_errors(fake: FakeCorral) -> None:
    with pytest.raises(Unauthenticated):
        await AsyncClient.login(URL, "admin", "nope", transport=fake.transport)
    async with await AsyncClient.login(URL, "admin", "secret", transport=fake.transport) as client:
        assert client.token in fake.state.tokens
        with pytest.raises(NotFound):
            await client.vms.get("missing")


async def test_async_end_to_end(aclient: AsyncClient, fake: FakeCorral, tmp_path: Path) -> None:
    fake.state.op_steps = 3
    await (await aclient.zones.create("z1")).wait()
    await (await aclient.clusters.create("c1", zone="z1")).wait()
    await (await aclient.hosts.add("https://h1:7070", "c1")).wait()
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(3000))
    sent: list[int] = []
    upload = await aclient.images.import_file("img", disk, progress=lambda d, t: sent.append(d))
    assert sent == [3000]
    await upload.wait()
    assert (await aclient.images.get("img")).format == "raw"
    progress: list[int] = []
    op = await aclient.vms.create("vm1", image="img", cpus=1, memory_mb=256)
    await op.wait(on_progress=lambda state: progress.append(state.progress))
    assert progress == [0, 33, 66, 100]
    names = [vm.name async for vm in aclient.vms.iter(page_size=1)]
    assert names == ["vm1"]
    big = await aclient.vms.create("big", image="img", cpus=1, memory_mb=999_999)
    with pytest.raises(NoHostAvailable):
        await big.wait()
    assert big.status is OperationStatus.failed
    target = tmp_path / "back.raw"
    assert await aclient.images.download("img", target) == 3000


@pytest.mark.parametrize("name", unasync.MODULES)
def test_generated_sync_client_is_up_to_date(name: str) -> None:
    generated = unasync.TARGET / name
    assert generated.read_text() == unasync.generate(name), (
        f"{generated} is stale: run python src/corral/sdk/_unasync.py"
    )


def test_unasync_rewrites_the_async_vocabulary() -> None:
    source = (
        '"""Doc."""\nasync def f(c: AsyncClient) -> AsyncIterator[int]:\n    await async_sleep(1)\n'
    )
    out = unasync.unasync(source, origin="x.py")
    assert "def f(c: Client) -> Iterator[int]:\n    sync_sleep(1)" in out
    assert "# Generated from x.py" in out
