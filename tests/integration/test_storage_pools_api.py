"""Storage pools through REST on SQLite and PostgreSQL: typed settings, sealed credentials that no
answer or query reveals, cluster attachments, the delete rule, permissions, query, tags and ETags."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from corral.server.app import ServerHandle, start
from corral.server.db.tables import StoragePoolClusterRow, StoragePoolRow, UserRow
from corral.server.secretbox import SecretBox
from corral.server.services.pools import credentials_context
from corral.server.settings import ServerSettings
from tests.integration.identity.admin import done, names, refused

ADMIN_PW = "pw-admin-1"
USER_PW = "correct horse battery staple 42"
CEPHX = "AQBcephxSecretKeyThatMustNeverLeak0000=="
RBD = {"monitors": ["10.0.0.1:6789", "mon2"], "pool": "vms"}


@pytest.fixture
async def server(tmp_path: Path, database_url: str | None) -> AsyncIterator[ServerHandle]:
    settings = ServerSettings(
        data_dir=tmp_path, port=0, tls=False, admin_password=ADMIN_PW, database_url=database_url
    )
    handle = await start(settings, listen=False)
    try:
        yield handle
    finally:
        await handle.stop()


async def _login(server: ServerHandle, name: str, password: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://t/api/v1")
    r = await c.post("/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"
    return c


@pytest.fixture
async def api(server: ServerHandle) -> AsyncIterator[httpx.AsyncClient]:
    c = await _login(server, "admin", ADMIN_PW)
    try:
        yield c
    finally:
        await c.aclose()


async def _pool_rows(server: ServerHandle) -> list[StoragePoolRow]:
    async with server.services.sessionmaker() as s:
        return list(await s.scalars(select(StoragePoolRow).order_by(StoragePoolRow.name)))


async def _clusters(api: httpx.AsyncClient) -> dict[str, str]:
    done(await api.post("/zones", json={"name": "z1"}))
    ids = {}
    for name in ("c1", "c2"):
        op = done(await api.post("/clusters", json={"name": name, "zone": "z1"}))
        ids[name] = op["target_id"]
    return ids


def _create(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "rbd", "settings": RBD, "credentials": CEPHX, **extra}


@pytest.mark.postgres
async def test_create_get_credentials_sealed_and_never_returned(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    clusters = await _clusters(api)
    op = done(
        await api.post("/storage-pools", json=_create("ceph", clusters=["c1", clusters["c2"]]))
    )
    assert op["type"] == "storage_pool.create" and op["target_type"] == "storage_pool"
    r = await api.get("/storage-pools/ceph")
    assert r.status_code == 200
    pool = r.json()
    assert pool["id"] == op["target_id"] and pool["type"] == "rbd" and pool["state"] == "enabled"
    assert pool["settings"] == {**RBD, "user": "admin"}
    assert pool["cluster_ids"] == sorted(clusters.values())
    assert pool["has_credentials"] is True and "credentials" not in pool
    assert pool["overcommit"] == 1.0
    assert pool["capacity"] == {"total_gb": 0, "used_gb": 0, "allocated_gb": 0}
    assert r.headers["ETag"] == pool["etag"]
    for answer in (r, await api.get("/storage-pools"), await api.get(f"/operations/{op['id']}")):
        assert CEPHX not in answer.text

    [row] = await _pool_rows(server)
    assert row.credentials_sealed is not None and CEPHX not in row.credentials_sealed
    assert SecretBox.is_sealed(row.credentials_sealed)
    box = server.services.secrets
    assert box.open(row.credentials_sealed, credentials_context(row.id)) == CEPHX

    # rotation seals the new credentials; state and overcommit change
    done(await api.patch("/storage-pools/ceph", json={"credentials": "new-key", "overcommit": 2.5}))
    [row] = await _pool_rows(server)
    assert box.open(row.credentials_sealed or "", credentials_context(row.id)) == "new-key"
    assert (await api.get("/storage-pools/ceph")).json()["overcommit"] == 2.5

    # credentials are not a queryable field
    r = await api.get("/storage-pools", params={"q": "credentials_sealed~AQ*"})
    refused(r, 400, "invalid_query", field="credentials_sealed")
    refused(await api.get("/storage-pools", params={"q": "settings=x"}), 400, "invalid_query")


@pytest.mark.postgres
async def test_bad_input_is_422_and_creates_nothing(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    await _clusters(api)
    bad: list[dict[str, Any]] = [
        {"name": "p", "type": "local", "settings": {"path": "relative/dir"}},
        {"name": "p", "type": "local", "settings": {"path": "/a/../etc"}},
        {"name": "p", "type": "rbd", "settings": {"path": "/srv"}},  # another type's settings
        {
            "name": "p",
            "type": "nfs",
            "settings": {"server": "nas", "export": "/e"},
            "credentials": "x",
        },
        {"name": "p", "type": "iscsi", "settings": {"portal": "t:3260", "iqn": "not-an-iqn"}},
        {"name": "p", "type": "rbd", "settings": {"monitors": [], "pool": "vms"}},
        {"name": "p", "type": "zfs", "settings": {"path": "/srv"}},
        {"name": "p", "type": "local", "settings": {"path": "/srv"}, "overcommit": 0},
        {"name": "p", "type": "local", "settings": {"path": "/srv", "extra": 1}},
        {"name": "bad name", "type": "local", "settings": {"path": "/srv"}},
    ]
    for body in bad:
        r = await api.post("/storage-pools", json=body)
        refused(r, 422, "invalid_input")
    r = await api.post(
        "/storage-pools", json={"name": "p", "type": "rbd", "settings": {"path": "/s"}}
    )
    assert "monitors" in r.json()["error"]["message"]
    # an unknown cluster: 404 and no pool either
    r = await api.post(
        "/storage-pools",
        json={"name": "p", "type": "local", "settings": {"path": "/srv"}, "clusters": ["nope"]},
    )
    refused(r, 404, "not_found")
    assert await _pool_rows(server) == []
    assert (await api.get("/storage-pools")).json()["total"] == 0

    done(
        await api.post(
            "/storage-pools", json={"name": "p", "type": "local", "settings": {"path": "/srv"}}
        )
    )
    r = await api.post("/storage-pools", json={"name": "p", "type": "nfs",
                                               "settings": {"server": "nas", "export": "/e"}})  # fmt: skip
    refused(r, 409, "name_taken")
    r = await api.patch("/storage-pools/p", json={"credentials": "x"})
    refused(r, 422, "invalid_input")
    assert [row.credentials_sealed for row in await _pool_rows(server)] == [None]


@pytest.mark.postgres
async def test_attach_detach_and_delete_rule(server: ServerHandle, api: httpx.AsyncClient) -> None:
    clusters = await _clusters(api)
    done(await api.post("/storage-pools", json={"name": "loc", "type": "local",
                                                "settings": {"path": "/var/lib/corral"}}))  # fmt: skip
    op = done(await api.post("/storage-pools/loc/clusters", json={"cluster": "c1"}))
    assert op["type"] == "storage_pool.attach"
    done(await api.post("/storage-pools/loc/clusters", json={"cluster": "c1"}))  # idempotent
    done(await api.post("/storage-pools/loc/clusters", json={"cluster": clusters["c2"]}))
    assert (await api.get("/storage-pools/loc")).json()["cluster_ids"] == sorted(clusters.values())
    refused(
        await api.post("/storage-pools/loc/clusters", json={"cluster": "nope"}), 404, "not_found"
    )

    # attached and enabled: refused; detached from c1, still attached to c2: still refused
    refused(await api.delete("/storage-pools/loc"), 409, "invalid_state", clusters=2)
    done(await api.delete("/storage-pools/loc/clusters/c1"))
    assert (await api.get("/storage-pools/loc")).json()["cluster_ids"] == [clusters["c2"]]
    refused(await api.delete("/storage-pools/loc"), 409, "invalid_state", clusters=1)
    # in maintenance it goes, with its attachments
    done(await api.patch("/storage-pools/loc", json={"state": "maintenance"}))
    op = done(await api.delete("/storage-pools/loc"))
    assert op["type"] == "storage_pool.delete"
    refused(await api.get("/storage-pools/loc"), 404, "not_found")
    async with server.services.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(StoragePoolClusterRow)) == 0

    # no clusters attached: deleted while enabled
    done(await api.post("/storage-pools", json={"name": "free", "type": "local",
                                                "settings": {"path": "/srv"}}))  # fmt: skip
    done(await api.delete("/storage-pools/free"))
    assert await _pool_rows(server) == []

    # deleting a cluster detaches it from its pools
    body = {"name": "kept", "type": "local", "settings": {"path": "/srv"}, "clusters": ["c1"]}
    done(await api.post("/storage-pools", json=body))
    done(await api.delete("/clusters/c1"))
    assert (await api.get("/storage-pools/kept")).json()["cluster_ids"] == []


@pytest.mark.postgres
async def test_query_tags_etag_and_permissions(
    server: ServerHandle, api: httpx.AsyncClient
) -> None:
    done(await api.post("/storage-pools", json=_create("ceph", overcommit=3)))
    done(await api.post("/storage-pools", json={"name": "nas", "type": "nfs",
                                                "settings": {"server": "nas.lan", "export": "/vms"}}))  # fmt: skip
    done(await api.post("/storage-pools", json={"name": "loc", "type": "local",
                                                "settings": {"path": "/srv"}}))  # fmt: skip
    page = (
        await api.get("/storage-pools", params={"q": "type=in:nfs|rbd", "sort": "-name"})
    ).json()
    assert names(page) == ["nas", "ceph"] and page["total"] == 2
    assert names((await api.get("/storage-pools", params={"q": "overcommit>1"})).json()) == ["ceph"]
    assert (await api.get("/storage-pools", params={"type": "local"})).json()["total"] == 1
    refused(await api.get("/storage-pools", params={"q": "type=zfs"}), 400, "invalid_query")
    r = await api.get("/storage-pools", params={"fields": "name,type", "sort": "name"})
    assert r.json()["items"][0] == {"name": "ceph", "type": "rbd"}

    done(await api.post("/storage-pools/nas/tags", json={"tags": ["tier=gold"]}))
    assert (await api.get("/storage-pools/nas")).json()["tags"] == ["tier=gold"]
    assert names((await api.get("/storage-pools", params={"tag": "tier=gold"})).json()) == ["nas"]

    etag = (await api.get("/storage-pools/loc")).headers["ETag"]
    done(
        await api.patch(
            "/storage-pools/loc", json={"state": "disabled"}, headers={"If-Match": etag}
        )
    )
    r = await api.patch("/storage-pools/loc", json={"state": "enabled"}, headers={"If-Match": etag})
    refused(r, 412, "precondition_failed")
    assert (await api.get("/storage-pools/loc")).json()["state"] == "disabled"

    async with server.services.sessionmaker.begin() as s:
        s.add(UserRow(name="joe", password_hash=PasswordHasher().hash(USER_PW)))
    server.services.callers.clear()
    joe = await _login(server, "joe", USER_PW)
    try:
        refused(await joe.get("/storage-pools"), 403, "forbidden")
        refused(await joe.get("/storage-pools/loc"), 403, "forbidden")
        body = {"name": "x", "type": "local", "settings": {"path": "/x"}}
        refused(await joe.post("/storage-pools", json=body), 403, "forbidden")
        refused(await joe.delete("/storage-pools/loc"), 403, "forbidden")
    finally:
        await joe.aclose()
    assert len(await _pool_rows(server)) == 3
