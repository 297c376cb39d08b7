"""Images: streamed upload with progress, download, import from a URL, cleanup on failure."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from corral.api.errors import CorralError, InvalidInput, NotFound
from corral.api.images import ImageStatus
from corral.sdk import Client
from corral.sdk._base import CHUNK_SIZE
from corral.sdk.testing import FakeCorral

URL = "http://corral.test"


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.qcow2"
    path.write_bytes(b"QFI\xfb" + bytes(2 * CHUNK_SIZE + 1000))
    return path


def test_import_file_streams_the_file_and_reports_progress(
    client: Client, fake: FakeCorral, disk: Path
) -> None:
    size = disk.stat().st_size
    progress: list[tuple[int, int]] = []
    op = client.images.import_file(
        "img", disk, progress=lambda done, total: progress.append((done, total))
    )
    assert progress == [(CHUNK_SIZE, size), (2 * CHUNK_SIZE, size), (size, size)]
    upload = fake.requests[-1]
    assert (upload.method, upload.url.path) == ("PUT", f"/api/v1/images/{op.target_id}/data")
    assert upload.headers["Content-Length"] == str(size)
    assert "Transfer-Encoding" not in upload.headers
    assert upload.headers["Content-Type"] == "application/octet-stream"
    assert client.images.get("img").status is ImageStatus.importing
    op.wait()
    image = client.images.get("img")
    assert (image.status, image.format, image.size_bytes) == (ImageStatus.ready, "qcow2", size)
    assert fake.state.image_data[image.id] == disk.read_bytes()


def test_download_writes_the_data_with_progress(client: Client, disk: Path, tmp_path: Path) -> None:
    client.images.import_file("img", disk).wait()
    target = tmp_path / "copy.qcow2"
    seen: list[int] = []
    written = client.images.download("img", target, progress=lambda done, total: seen.append(done))
    assert written == disk.stat().st_size == seen[-1]
    assert target.read_bytes() == disk.read_bytes()
    with pytest.raises(NotFound):
        client.images.download("nope", tmp_path / "nope")


def test_a_failed_upload_removes_the_half_created_image(fake: FakeCorral, disk: Path) -> None:
    def broken_upload(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            raise httpx.WriteError("connection reset", request=request)
        return fake.handle(request)

    transport = httpx.MockTransport(broken_upload)
    with Client(URL, fake.login_token(), transport=transport) as client:
        with pytest.raises(CorralError, match="connection reset"):
            client.images.import_file("img", disk)
        assert client.images.list().total == 0


def test_a_missing_file_is_refused_before_anything_is_created(
    client: Client, fake: FakeCorral, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        client.images.import_file("img", tmp_path / "missing.qcow2")
    assert fake.state.images == {}


def test_import_url_lets_the_server_download(client: Client) -> None:
    op = client.images.import_url("cirros", "https://example.org/cirros.img").wait()
    image = client.images.get(op.target_id or "")
    assert (image.status, image.source_url) == (ImageStatus.ready, "https://example.org/cirros.img")
