"""Users, projects and memberships made straight in the database (the test's own fixtures), and
clients logged in as them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from argon2 import PasswordHasher
from sqlalchemy import select

from corral.server.db.tables import MembershipRow, ProjectRow, QuotaRow, RoleRow, UserRow
from corral.up import Stack

PASSWORD = "correct horse battery staple 42"
_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


async def make_project(stack: Stack, name: str) -> str:
    async with stack.server.services.sessionmaker.begin() as s:
        row = ProjectRow(name=name)
        s.add(row)
        await s.flush()
        s.add(QuotaRow(project_id=row.id))
        return row.id


async def make_user(
    stack: Stack, name: str, memberships: dict[str, str] | None = None, *, admin: bool = False
) -> str:
    """A user with ``memberships`` {project id: role name}."""
    async with stack.server.services.sessionmaker.begin() as s:
        user = UserRow(name=name, password_hash=_hasher.hash(PASSWORD), is_admin=admin)
        s.add(user)
        await s.flush()
        for project_id, role in (memberships or {}).items():
            role_id = await s.scalar(select(RoleRow.id).where(RoleRow.name == role))
            assert role_id is not None, role
            s.add(MembershipRow(user_id=user.id, project_id=project_id, role_id=role_id))
    stack.server.services.callers.clear()
    return user.id


@asynccontextmanager
async def client_as(stack: Stack, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{stack.server.url}/api/v1", timeout=60) as c:
        r = await c.post("/auth/login", json={"username": name, "password": PASSWORD})
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c
