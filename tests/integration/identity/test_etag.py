"""Optimistic concurrency: resources carry an ETag; a change with a stale If-Match gets 412."""

from __future__ import annotations

from pathlib import Path

from bench.common import make_qcow2

from tests.support.stack import api_client, running_stack, wait_op


async def test_stale_if_match_is_refused(tmp_path: Path) -> None:
    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    async with running_stack(tmp_path / "s") as stack, api_client(stack) as c:
        await c.post("/images", json={"name": "tiny"})
        await c.put("/images/tiny/data", content=qcow.read_bytes())
        r = await c.post("/vms", json={"name": "web", "image": "tiny", "cpus": 1, "memory_mb": 64})
        await wait_op(c, r.json())
        r = await c.get("/vms/web")
        etag = r.headers["etag"]
        assert etag == r.json()["etag"] and etag.startswith('"')
        # someone else changes the VM: its ETag changes
        await wait_op(c, (await c.post("/vms/web/stop")).json())
        current = (await c.get("/vms/web")).headers["etag"]
        assert current != etag
        for method, path, body in [
            ("POST", "/vms/web/start", None),
            ("POST", "/vms/web/resize", {"cpus": 2}),
            ("DELETE", "/vms/web", None),
        ]:
            r = await c.request(method, path, json=body, headers={"If-Match": etag})
            assert r.status_code == 412, (path, r.text)
            assert r.json()["error"]["code"] == "precondition_failed"
            assert r.json()["error"]["context"]["etag"] == current
        assert (await c.get("/vms/web")).json()["power_state"] == "stopped"  # nothing ran
        r = await c.post("/vms/web/start", headers={"If-Match": current})
        assert r.status_code == 202, r.text
        assert (await wait_op(c, r.json()))["status"] == "succeeded"
        r = await c.post("/vms/web/stop", headers={"If-Match": "*"})
        assert r.status_code == 202
