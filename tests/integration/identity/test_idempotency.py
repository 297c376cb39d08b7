"""Idempotency-Key: a retried mutating call returns the first answer (also after a restart or a
crash before the answer was stored) and never creates a second VM."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from bench.common import make_qcow2
from sqlalchemy import func, select, update

from corral.server.app import start
from corral.server.db.tables import IdempotencyRow, VmRow
from corral.server.settings import ServerSettings
from tests.support.stack import ADMIN_PASSWORD, api_client, running_stack, wait_op

VM = {"name": "web", "image": "tiny", "cpus": 1, "memory_mb": 64, "disk_gb": 1}


async def _vm_count(stack: object) -> int:
    async with stack.server.services.sessionmaker() as s:  # type: ignore[attr-defined]
        return int(await s.scalar(select(func.count()).select_from(VmRow)) or 0)


async def test_retries_return_the_first_answer(tmp_path: Path) -> None:
    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    data = tmp_path / "stack"
    async with running_stack(data, sim_hosts=2) as stack, api_client(stack) as c:
        await c.post("/images", json={"name": "tiny"})
        await c.put("/images/tiny/data", content=qcow.read_bytes())
        key = {"Idempotency-Key": "create-web-1"}
        first = await c.post("/vms", json=VM, headers=key)
        assert first.status_code == 202, first.text
        again = await c.post("/vms", json=VM, headers=key)
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        assert (await wait_op(c, first.json()))["status"] == "succeeded"
        assert await _vm_count(stack) == 1
        # same key, different request: refused, nothing runs
        other = await c.post("/vms", json={**VM, "name": "web2"}, headers=key)
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        assert await _vm_count(stack) == 1
        # errors are answers too (4xx replayed), without a key every call runs
        dup = await c.post("/vms", json=VM, headers={"Idempotency-Key": "dup"})
        assert dup.status_code == 409 and dup.json()["error"]["code"] == "name_taken"
        assert (
            await c.post("/vms", json=VM, headers={"Idempotency-Key": "dup"})
        ).status_code == 409

        # the server died after committing the VM but before storing the answer
        async with stack.server.services.sessionmaker.begin() as s:
            await s.execute(update(IdempotencyRow).where(IdempotencyRow.id.isnot(None)).values(
                status_code=None, response=None, headers={"_boot": "an-earlier-process"}))  # fmt: skip
        crashed = await c.post("/vms", json=VM, headers=key)
        assert crashed.status_code == 202, crashed.text
        assert crashed.json()["id"] == first.json()["id"]
        assert await _vm_count(stack) == 1
        # a request cut short before anything committed runs again
        r = await c.post("/vms", json={**VM, "name": "db"}, headers={"Idempotency-Key": "k2"})
        assert r.status_code == 202
        await wait_op(c, r.json())
    # after a restart (a new server process on the same database) the answer is still there
    server = await start(ServerSettings(data_dir=data, host="127.0.0.1", port=0, tls=False,
                                        admin_password=ADMIN_PASSWORD))  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as c2:
            r = await c2.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            c2.headers["Authorization"] = f"Bearer {r.json()['token']}"
            after = await c2.post("/vms", json=VM, headers=key)
            assert after.status_code == 202 and after.json()["id"] == first.json()["id"]
            assert after.headers["idempotent-replayed"] == "true"
    finally:
        await server.stop()


async def test_retries_signed_with_an_access_key(tmp_path: Path) -> None:
    """A program using an AccessKey retries with the same Idempotency-Key (each retry signed
    anew): the first answer comes back, the VM is created once; a forged retry with another
    user's key id is refused before anything is looked up."""
    from corral.api.signing import signed_headers

    qcow = make_qcow2(tmp_path / "tiny.qcow2")
    async with running_stack(tmp_path / "s", sim_hosts=1) as stack, api_client(stack) as c:
        await c.post("/images", json={"name": "tiny"})
        await c.put("/images/tiny/data", content=qcow.read_bytes())
        created = (await c.post("/access-keys", json={"description": "ci"})).json()
        key_id, secret = created["id"], created["secret"]
        body = json.dumps(VM).encode()
        path = "/api/v1/vms"

        async def post(payload: bytes, secret_used: str = secret) -> httpx.Response:
            headers = signed_headers(key_id, secret_used, "POST", path, "", payload)
            headers |= {"Idempotency-Key": "sdk-create-1", "Content-Type": "application/json"}
            async with httpx.AsyncClient(base_url=stack.server.url) as raw:
                return await raw.post(path, content=payload, headers=headers)

        first = await post(body)
        assert first.status_code == 202, first.text
        again = await post(body)
        assert again.status_code == 202, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert (await wait_op(c, first.json()))["status"] == "succeeded"
        assert await _vm_count(stack) == 1
        other = await post(json.dumps({**VM, "name": "web2"}).encode())
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        forged = await post(body, secret_used="not-the-secret")
        assert forged.status_code == 401, forged.text
        assert "idempotent-replayed" not in forged.headers
        assert await _vm_count(stack) == 1
