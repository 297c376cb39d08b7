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


async def test_every_kind_has_etags(tmp_path: Path) -> None:
    """Every resource's GET carries its ETag; a change with a stale If-Match is refused with 412
    and changes nothing; the current one (or ``*``) goes through."""
    async with running_stack(tmp_path / "s") as stack, api_client(stack) as c:
        for path, body in [
            ("/zones", {"name": "z1"}),
            ("/offerings", {"name": "o1", "cpus": 1, "memory_mb": 64, "disk_gb": 1}),
            ("/projects", {"name": "p1"}),
            ("/roles", {"name": "r1", "permissions": ["vm:list"]}),
            ("/images", {"name": "i1"}),
        ]:
            assert (await c.post(path, json=body)).status_code == 202
        await c.post("/clusters", json={"name": "c1", "zone": "z1"})
        cases = [
            ("/clusters/c1", {"description": "x"}),
            ("/hosts/" + (await c.get("/hosts")).json()["items"][0]["name"], {"enabled": False}),
            ("/projects/p1", {"description": "x"}),
            ("/roles/r1", {"description": "x"}),
            ("/users/admin", {"email": "admin@example.org"}),
        ]
        for path, change in cases:
            r = await c.get(path)
            etag = r.headers["etag"]
            assert etag == r.json()["etag"], path
            assert (await c.patch(path, json=change)).status_code == 202, path  # someone else
            stale = await c.patch(path, json=change, headers={"If-Match": etag})
            assert stale.status_code == 412, (path, stale.text)
            current = (await c.get(path)).headers["etag"]
            assert current != etag and stale.json()["error"]["context"]["etag"] == current
            r = await c.patch(path, json=change, headers={"If-Match": current})
            assert r.status_code == 202, (path, r.text)
        for path in ("/zones/z1", "/offerings/o1", "/images/i1"):
            stale = '"0000000000"'
            r = await c.delete(path, headers={"If-Match": stale})
            assert r.status_code == 412, (path, r.text)
            assert (await c.get(path)).status_code == 200  # not deleted
        r = await c.delete("/offerings/o1", headers={"If-Match": "*"})
        assert r.status_code == 202
        # a resource that does not exist is still a 404, whatever the If-Match
        r = await c.delete("/offerings/nope", headers={"If-Match": '"x"'})
        assert r.status_code == 404
