"""Loading callers (user + memberships + roles) with a short per-process cache, and the identity
set-up at start-up (built-in roles, the default project, the first admin's membership)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.api.errors import NotFound, Unauthenticated
from corral.server.db.tables import (
    MembershipRow,
    ProjectRow,
    QuotaRow,
    RoleRow,
    UserRow,
    VmRow,
)
from corral.server.identity.caller import AuthMethod, Caller
from corral.server.identity.permissions import BUILTIN_ROLES

CALLER_CACHE_S = 5.0
"""How long a loaded caller (memberships, roles) is reused; changes made through this process
clear the cache at once, other server nodes see them within this time."""

DEFAULT_PROJECT = "default"


@dataclass
class CallerCache:
    entries: dict[str, tuple[float, Caller]] = field(default_factory=dict)

    def clear(self) -> None:
        """Memberships, roles, projects or users changed."""
        self.entries.clear()


async def load_caller(
    sm: async_sessionmaker[AsyncSession],
    cache: CallerCache,
    user_id: str,
    *,
    project: str | None = None,
    method: AuthMethod = "token",
) -> Caller:
    """The caller ``user_id`` with its roles; ``project`` (id or name) scopes the request.
    ``Unauthenticated`` if the user is gone or disabled; ``NotFound`` for a project the caller
    cannot see."""
    now = time.monotonic()
    hit = cache.entries.get(user_id)
    base = hit[1] if hit is not None and hit[0] > now else None
    if base is None:
        base = await _load(sm, user_id)
        if len(cache.entries) > 10_000:
            cache.entries.clear()
        cache.entries[user_id] = (now + CALLER_CACHE_S, base)
    caller = replace(base, method=method)
    if project:
        caller = replace(caller, project_id=await _project_id(sm, caller, project))
    return caller


async def _load(sm: async_sessionmaker[AsyncSession], user_id: str) -> Caller:
    async with sm() as s:
        user = await s.get(UserRow, user_id)
        if user is None or not user.enabled:
            raise Unauthenticated("this account is disabled or was removed")
        rows = (
            await s.execute(
                select(MembershipRow.project_id, RoleRow.permissions, ProjectRow.share_resources)
                .join(RoleRow, RoleRow.id == MembershipRow.role_id)
                .join(ProjectRow, ProjectRow.id == MembershipRow.project_id)
                .where(MembershipRow.user_id == user_id)
            )
        ).all()
    return Caller(
        user_id=user.id,
        username=user.name,
        is_platform_admin=user.is_admin,
        roles={p: frozenset(perms) for p, perms, _ in rows},
        sharing=frozenset(p for p, _, share in rows if share),
    )


async def _project_id(sm: async_sessionmaker[AsyncSession], caller: Caller, ref: str) -> str:
    async with sm() as s:
        pid = await s.scalar(
            select(ProjectRow.id).where(or_(ProjectRow.id == ref, ProjectRow.name == ref))
        )
    if pid is None or (not caller.is_platform_admin and pid not in caller.roles):
        raise NotFound(f"project {ref!r} not found", kind="project", ref=ref)
    return pid


async def ensure_identity(sm: async_sessionmaker[AsyncSession]) -> None:
    """Idempotent start-up set-up: built-in roles as defined in code, a ``default`` project with
    a quota row when there is no project at all, every platform admin without a membership made
    project-admin of it, and VMs without a project (from before projects existed) moved into it."""
    async with sm.begin() as s:
        roles = {r.name: r for r in await s.scalars(select(RoleRow))}
        for name, (description, perms) in BUILTIN_ROLES.items():
            role = roles.get(name)
            if role is None:
                s.add(RoleRow(name=name, description=description, builtin=True,
                              permissions=list(perms)))  # fmt: skip
            elif role.permissions != perms or not role.builtin:
                role.permissions, role.description, role.builtin = list(perms), description, True
        await s.flush()
        project = await s.scalar(select(ProjectRow).order_by(ProjectRow.created_at).limit(1))
        if project is None:
            project = ProjectRow(name=DEFAULT_PROJECT, description="created at first start")
            s.add(project)
            await s.flush()
            s.add(QuotaRow(project_id=project.id))
        admin_role = await s.scalar(select(RoleRow.id).where(RoleRow.name == "project-admin"))
        admins = await s.scalars(select(UserRow).where(UserRow.is_admin.is_(True)))
        for user in admins:
            member = await s.scalar(
                select(MembershipRow.id).where(MembershipRow.user_id == user.id).limit(1)
            )
            if member is None and admin_role is not None:
                s.add(MembershipRow(user_id=user.id, project_id=project.id, role_id=admin_role))
        await s.execute(
            update(VmRow).where(VmRow.project_id.is_(None)).values(project_id=project.id)
        )


async def require_project(s: AsyncSession, project_id: str) -> ProjectRow:
    row = await s.get(ProjectRow, project_id)
    if row is None:
        raise NotFound(f"project {project_id} not found", kind="project", ref=project_id)
    return row
