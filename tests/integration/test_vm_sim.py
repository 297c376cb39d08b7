"""The VM lifecycle through the REST API, server + agent over HTTP, simulator driver, on SQLite and
PostgreSQL: create/stop/start/reboot/pause/resume/resize/delete, bad input, placement refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support.stack import api_client, running_stack, upload_image, wait_op


def make_qcow2(path: Path, size: str = "64M") -> Path:
    import subprocess

    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


async def vm(c: httpx.AsyncClient, name: str) -> dict:  # type: ignore[type-arg]
    r = await c.get(f"/vms/{name}")
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


async def test_lifecycle(tmp_path: Path, database_url: str | None) -> None:
    async with (
        running_stack(tmp_path, sim_hosts=2, database_url=database_url) as stack,
        api_client(stack) as c,
    ):
        hosts = (await c.get("/hosts")).json()
        assert hosts["total"] == 2 and all(h["status"] == "connected" for h in hosts["items"])
        img = await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        assert img["status"] == "ready" and img["format"] == "qcow2"

        r = await c.post(
            "/vms", json={"name": "web1", "image": "tiny", "cpus": 1, "memory_mb": 256}
        )
        assert r.status_code == 202, r.text
        op = await wait_op(c, r.json())
        assert op["status"] == "succeeded", op
        v = await vm(c, "web1")
        assert (v["status"], v["power_state"]) == ("running", "running")

        for action, status in [("stop", "stopped"), ("start", "running"), ("reboot", "running"),
                               ("pause", "paused"), ("resume", "running"), ("stop", "stopped")]:  # fmt: skip
            r = await c.post(f"/vms/web1/{action}")
            assert r.status_code == 202, r.text
            op = await wait_op(c, r.json())
            assert op["status"] == "succeeded", (action, op)
            assert (await vm(c, "web1"))["status"] == status

        r = await c.post("/vms/web1/resize", json={"cpus": 2, "memory_mb": 512})
        assert (await wait_op(c, r.json()))["status"] == "succeeded"
        v = await vm(c, "web1")
        assert (v["cpus"], v["memory_mb"]) == (2, 512)
        host = (await c.get(f"/hosts/{v['host_id']}")).json()
        assert host["capacity"]["cpus_used"] == 2 and host["capacity"]["memory_mb_used"] == 512

        assert (await wait_op(c, (await c.post("/vms/web1/start")).json()))["status"] == "succeeded"
        r = await c.post("/vms/web1/resize", json={"cpus": 1})
        assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"

        r = await c.delete("/vms/web1")
        assert (await wait_op(c, r.json()))["status"] == "succeeded"
        assert (await c.get("/vms/web1")).status_code == 404
        host = (await c.get(f"/hosts/{v['host_id']}")).json()
        assert host["capacity"]["cpus_used"] == 0 and host["capacity"]["memory_mb_used"] == 0


async def test_bad_input_creates_nothing(tmp_path: Path) -> None:
    async with running_stack(tmp_path, sim_hosts=2) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        cases = [
            ({"name": "a", "image": "nope", "cpus": 1, "memory_mb": 256}, 404, "not_found"),
            ({"name": "a", "image": "tiny", "cpus": 1, "memory_mb": 0}, 422, "invalid_input"),
            ({"name": "a b", "image": "tiny", "cpus": 1, "memory_mb": 256}, 422, "invalid_input"),
            (
                {"name": "a", "image": "tiny", "cpus": 200, "memory_mb": 256},
                409,
                "no_host_available",
            ),
        ]
        for body, status, code in cases:
            r = await c.post("/vms", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (body, r.text)
        r = await c.post("/vms", json={"name": "a", "image": "tiny", "cpus": 200, "memory_mb": 256})
        hosts = r.json()["error"]["context"]["hosts"]
        assert len(hosts) == 2 and all(h["reasons"] for h in hosts)
        r = await c.post("/vms", json={"name": "dup", "image": "tiny", "cpus": 1, "memory_mb": 64})
        await wait_op(c, r.json())
        r = await c.post("/vms", json={"name": "dup", "image": "tiny", "cpus": 1, "memory_mb": 64})
        assert (r.status_code, r.json()["error"]["code"]) == (409, "name_taken")
        assert (await c.get("/vms")).json()["total"] == 1


async def test_parallel_creates_never_oversubscribe(tmp_path: Path) -> None:
    overrides = {"sim_cpus": 4, "sim_memory_mb": 1280}
    async with (
        running_stack(tmp_path, sim_hosts=10, agent_overrides=overrides) as stack,
        api_client(stack) as c,
    ):
        await upload_image(c, "tiny", make_qcow2(tmp_path / "tiny.qcow2"))
        bodies = [
            {"name": f"vm{i}", "image": "tiny", "cpus": 1, "memory_mb": 256} for i in range(50)
        ]
        responses = await asyncio.gather(*(c.post("/vms", json=b) for b in bodies))
        assert all(r.status_code == 202 for r in responses), [
            r.text for r in responses if r.status_code != 202
        ]
        ops = await asyncio.gather(*(wait_op(c, r.json()) for r in responses))
        assert all(o["status"] == "succeeded" for o in ops)
        hosts = (await c.get("/hosts")).json()["items"]
        for h in hosts:
            assert h["vm_count"] == 5
            cap = h["capacity"]
            assert cap["memory_mb_used"] <= h["facts"]["memory_mb"]
            assert cap["memory_mb_used"] == 5 * 256  # least-loaded spreads 50 VMs evenly
        for runtime in stack.agent.runtimes.values():
            assert not runtime.compute.overcommitted_ever  # type: ignore[attr-defined]
        r = await c.post(
            "/vms", json={"name": "one-too-many", "image": "tiny", "cpus": 1, "memory_mb": 256}
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_host_available"
