"""Images: upload, import from a URL with progress, bad bytes refused, in-use images kept."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.test_vm_sim import make_qcow2
from tests.support.stack import api_client, running_stack, upload_image, wait_op


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


async def test_import_from_url_and_errors(tmp_path: Path, http_dir: tuple[str, Path]) -> None:
    base, root = http_dir
    image = make_qcow2(root / "disk.qcow2", "256M")
    (root / "junk.txt").write_text("not a disk image\n" * 10)
    async with running_stack(tmp_path) as stack, api_client(stack) as c:
        r = await c.post("/images", json={"name": "web", "url": f"{base}/disk.qcow2"})
        assert r.status_code == 202
        op = await wait_op(c, r.json())
        assert op["status"] == "succeeded", op
        img = (await c.get("/images/web")).json()
        assert img["status"] == "ready" and img["format"] == "qcow2"
        assert img["virtual_size_bytes"] == 256 * 1024 * 1024
        assert img["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
        data = await c.get("/images/web/data")
        assert data.content == image.read_bytes()

        r = await c.post("/images", json={"name": "gone", "url": f"{base}/missing.qcow2"})
        op = await wait_op(c, r.json())
        assert op["status"] == "failed" and op["error"]["code"] == "invalid_input"
        assert (await c.get("/images/gone")).json()["status"] == "error"

        r = await c.post("/images", json={"name": "local", "url": "file:///etc/shadow"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"

        r = await c.post("/images", json={"name": "junk"})
        r = await c.put(f"/images/{r.json()['target_id']}/data", content=b"\x00" * 0)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
        assert not list((tmp_path / "images").glob("*.part"))


async def test_image_in_use_cannot_be_deleted(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        r = await c.post("/vms", json={"name": "v", "image": "tiny", "cpus": 1, "memory_mb": 64})
        await wait_op(c, r.json())
        r = await c.delete("/images/tiny")
        assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
        await wait_op(c, (await c.delete("/vms/v")).json())
        r = await c.delete("/images/tiny")
        assert r.status_code == 202
        assert (await c.get("/images/tiny")).status_code == 404
        assert not list((tmp_path / "images").iterdir())
