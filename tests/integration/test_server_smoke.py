"""The server alone: login, auth required, zones/clusters/offerings, errors with stable codes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from corral.server.app import start
from corral.server.settings import ServerSettings


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = ServerSettings(data_dir=tmp_path, port=0, tls=False, admin_password="pw-admin-1")
    handle = await start(settings, listen=False)
    try:
        yield handle
    finally:
        await handle.stop()


@pytest.fixture
async def api(server):  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c:
        r = await c.post("/auth/login", json={"username": "admin", "password": "pw-admin-1"})
        assert r.status_code == 200, r.text
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c


async def test_login_required_and_wrong_password(server) -> None:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as c:
        r = await c.get("/vms")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthenticated"
        r = await c.post("/auth/login", json={"username": "admin", "password": "nope"})
        assert r.status_code == 401
        r = await c.get("/health")
        assert r.status_code == 200 and r.json()["database"] == "sqlite"


async def test_zone_cluster_offering_crud(api: httpx.AsyncClient) -> None:
    r = await api.post("/zones", json={"name": "z1"})
    assert r.status_code == 202
    assert r.headers["location"].startswith("/api/v1/operations/")
    assert r.json()["status"] == "succeeded"
    r = await api.post("/zones", json={"name": "z1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "name_taken"
    r = await api.post("/clusters", json={"name": "c1", "zone": "z1"})
    assert r.status_code == 202
    r = await api.post("/clusters", json={"name": "c2", "zone": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.get("/clusters/c1")
    assert r.json()["cpu_overcommit"] == 4.0
    r = await api.delete("/zones/z1")
    assert r.status_code == 409 and r.json()["error"]["code"] == "in_use"
    r = await api.post(
        "/offerings", json={"name": "small", "cpus": 1, "memory_mb": 0, "disk_gb": 1}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    r = await api.post(
        "/offerings", json={"name": "small", "cpus": 1, "memory_mb": 256, "disk_gb": 1}
    )
    assert r.status_code == 202
    page = (await api.get("/offerings", params={"name": "small"})).json()
    assert page["total"] == 1 and page["items"][0]["memory_mb"] == 256
    r = await api.get("/offerings", params={"colour": "red"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query"


async def test_vm_create_bad_input_creates_nothing(api: httpx.AsyncClient) -> None:
    r = await api.post("/vms", json={"name": "v1", "image": "missing", "cpus": 1, "memory_mb": 256})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.post("/vms", json={"name": "v1", "image": "x", "cpus": 1, "memory_mb": 0})
    assert r.status_code == 422
    assert (await api.get("/vms")).json()["total"] == 0
    assert (await api.get("/operations")).json()["total"] == 0


async def test_filters_are_typed(api: httpx.AsyncClient) -> None:
    r = await api.get("/hosts", params={"enabled": "true"})
    assert r.status_code == 200 and r.json()["total"] == 0
    r = await api.get("/hosts", params={"enabled": "maybe"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query"
    assert r.json()["error"]["context"]["field"] == "enabled"
    r = await api.get("/vms", params={"sort": "-nope"})
    assert r.status_code == 400 and r.json()["error"]["context"]["field"] == "nope"
