"""Every route declares who may call it, and the declaration is enforced (a matrix generated from
the route table: a new route without a permission fails here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from corral.server.app import create_app
from corral.server.http.deps import Allow, current_host
from corral.server.identity.permissions import EVERYONE
from tests.support.identity import client_as, make_project, make_user
from tests.support.stack import ADMIN_PASSWORD, running_stack

PUBLIC = {("POST", "/api/v1/auth/login"), ("GET", "/api/v1/health")}


def _routes() -> list[tuple[str, str, str | None, bool]]:
    """(method, path, permission or None, agent-only) of every API route."""
    out = []
    for route in _api_routes():
        if not route.path.startswith("/api/v1"):
            continue
        deps = route.dependant.dependencies
        perms = [d.call.permission for d in deps if isinstance(d.call, Allow)]
        agent = any(d.call is current_host for d in deps)
        for method in sorted(route.methods or ()):
            out.append((method, route.path, perms[0] if perms else None, agent))
    return out


def _api_routes() -> list[Any]:
    """The app's routes with their full paths (FastAPI keeps included routers as groups)."""
    found: list[Any] = []
    for route in create_app().routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "effective_route_contexts"):
            found.extend(route.effective_route_contexts())
    return found


ROUTES = _routes()


def test_every_route_declares_a_permission() -> None:
    assert len(ROUTES) > 30
    undeclared = [
        (m, p)
        for m, p, perm, agent in ROUTES
        if perm is None and not agent and (m, p) not in PUBLIC
    ]
    assert undeclared == [], f"routes without a permission (use deps.allow): {undeclared}"


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", path)


async def test_the_declared_permissions_are_enforced(tmp_path: Path) -> None:
    """Anonymous -> 401 everywhere but the public routes; a user with no project role -> 403 on
    every route but what everyone may do; a platform admin is never refused."""
    async with running_stack(tmp_path) as stack:
        project = await make_project(stack, "p1")
        await make_user(stack, "nobody")
        await make_user(stack, "viewer", {project: "viewer"})
        async with (
            httpx.AsyncClient(base_url=stack.server.url, timeout=30) as anon,
            client_as(stack, "nobody") as nobody,
            client_as(stack, "viewer") as viewer,
        ):
            r = await anon.post("/api/v1/auth/login",
                                    json={"username": "admin", "password": ADMIN_PASSWORD})  # fmt: skip
            admin_token = r.json()["token"]
            for method, path, perm, agent in ROUTES:
                url = _concrete(path)
                if (method, path) in PUBLIC:
                    continue
                r = await anon.request(method, url)
                assert r.status_code == 401, (method, path, r.status_code)
                if agent:
                    continue
                assert perm is not None
                if perm in EVERYONE:
                    # everyone's own-account POSTs (logout, password...) would end the session
                    if method == "GET":
                        r = await nobody.get(url.removeprefix("/api/v1"))
                        assert r.status_code not in (401, 403), (method, path, r.text)
                    continue
                r = await nobody.request(method, url.removeprefix("/api/v1"))
                assert r.status_code == 403, (method, path, perm, r.text)
                assert r.json()["error"]["code"] == "forbidden"
                if perm.split(":")[1] not in ("list", "get"):
                    r = await viewer.request(method, url.removeprefix("/api/v1"))
                    assert r.status_code in (403, 404), (method, path, perm, r.text)
                r = await anon.request(method, url,
                                           headers={"Authorization": f"Bearer {admin_token}"})  # fmt: skip
                assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)


@pytest.mark.parametrize("perm", sorted({p for _, _, p, _ in ROUTES if p}))
def test_permissions_exist_in_the_catalog(perm: str) -> None:
    from corral.server.identity.permissions import ACTIONS

    kind, _, action = perm.partition(":")
    assert action in ACTIONS[kind]
