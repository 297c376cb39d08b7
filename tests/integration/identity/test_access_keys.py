"""AccessKeys: created once (secret shown once, sealed at rest), used by the SDK to sign requests;
bad, replayed, stale or disabled signatures are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

from corral.api.errors import Unauthenticated
from corral.api.signing import signed_headers
from corral.sdk import AsyncClient
from corral.server.db.tables import AccessKeyRow
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import running_stack


async def test_signed_requests(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        await make_user(stack, "hank", {await make_project(stack, "p"): "member"})
        async with client_as(stack, "hank") as hank:
            r = await hank.post("/access-keys", json={"description": "ci"})
            assert r.status_code == 201, r.text
            key_id, secret = r.json()["id"], r.json()["secret"]
            listed = (await hank.get("/access-keys")).json()["items"]
            assert [k["id"] for k in listed] == [key_id] and "secret" not in listed[0]
            r = await hank.get("/access-keys", params={"q": "enabled=false"})
            assert r.json()["total"] == 0
            r = await hank.get("/access-keys", params={"q": "secret~*"})  # never queryable
            assert r.status_code == 400 and r.json()["error"]["context"]["field"] == "secret"
        async with stack.server.services.sessionmaker() as s:
            stored = await s.scalar(select(AccessKeyRow.secret).where(AccessKeyRow.id == key_id))
        assert stored is not None and secret not in stored  # sealed

        url = stack.server.url
        async with AsyncClient(url, access_key=(key_id, secret)) as sdk:
            assert (await sdk.vms.list()).total == 0  # a signed GET
            me = await sdk.request("GET", "/users/me")
            assert me.json()["name"] == "hank"

        async with httpx.AsyncClient(base_url=url) as raw:
            path = "/api/v1/vms"
            headers = signed_headers(key_id, secret, "GET", path, "", b"")
            assert (await raw.get(path, headers=headers)).status_code == 200
            replay = await raw.get(path, headers=headers)
            assert replay.status_code == 401, replay.text  # the same nonce again
            bad = signed_headers(key_id, "not-the-secret", "GET", path, "", b"")
            assert (await raw.get(path, headers=bad)).status_code == 401
            old = datetime.now(UTC) - timedelta(minutes=6)
            stale = signed_headers(key_id, secret, "GET", path, "", b"", now=old)
            r = await raw.get(path, headers=stale)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
            other_path = signed_headers(key_id, secret, "GET", "/api/v1/images", "", b"")
            assert (await raw.get(path, headers=other_path)).status_code == 401

        async with client_as(stack, "hank") as hank:
            assert (
                await hank.patch(f"/access-keys/{key_id}", json={"enabled": False})
            ).status_code == 200
        stack.server.services.callers.clear()
        async with AsyncClient(url, access_key=(key_id, secret)) as sdk:
            try:
                await sdk.vms.list()
                raise AssertionError("a disabled key must be refused")
            except Unauthenticated:
                pass


async def test_disabled_key_is_refused_at_once_and_bodies_are_always_checked(
    tmp_path: Path,
) -> None:
    """The key cache never lets a disabled key through on this server, and skipping the body read
    of body-less requests never skips a body that was sent."""
    async with running_stack(tmp_path) as stack:
        await make_user(stack, "ivy", {await make_project(stack, "p"): "member"})
        async with client_as(stack, "ivy") as ivy:
            r = await ivy.post("/access-keys", json={})
            key_id, secret = r.json()["id"], r.json()["secret"]
            path = "/api/v1/vms"

            def signed(body: bytes = b"", signed_body: bytes = b"") -> dict[str, str]:
                return signed_headers(key_id, secret, "GET", path, "", signed_body)

            async with httpx.AsyncClient(base_url=stack.server.url) as raw:
                assert (await raw.get(path, headers=signed())).status_code == 200  # cached now
                # a GET carrying a body that its signature does not cover
                r = await raw.request("GET", path, headers=signed(), content=b"smuggled")
                assert r.status_code == 401 and "does not match" in r.text, r.text
                r = await raw.request(
                    "GET", path, headers=signed(signed_body=b"signed"), content=b"signed"
                )
                assert r.status_code == 200, r.text
                r = await ivy.patch(f"/access-keys/{key_id}", json={"enabled": False})
                assert r.status_code == 200
                assert (await raw.get(path, headers=signed())).status_code == 401
                r = await ivy.patch(f"/access-keys/{key_id}", json={"enabled": True})
                assert (await raw.get(path, headers=signed())).status_code == 200
                assert (await ivy.delete(f"/access-keys/{key_id}")).status_code in (200, 204)
                assert (await raw.get(path, headers=signed())).status_code == 401
