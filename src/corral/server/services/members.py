"""Project members: a user's role in a project (one per user and project).

Managed by whoever holds ``member:add|update|remove`` in the project (its project admins) or a
platform admin. No escalation: a non-platform caller can only give, change or take away a role
whose every permission they hold themselves in that project.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.common import Page
from corral.api.errors import Conflict, Forbidden, NotFound
from corral.api.identity import Member, MemberAdd, MemberUpdate
from corral.api.operations import Operation
from corral.server.db.tables import MembershipRow, RoleRow, UserRow
from corral.server.identity.access import require
from corral.server.identity.caller import Caller, grants
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.listing import ListRequest, get_row, page_of, plan, query_rows
from corral.server.services.projects import find_project, finish


def _may_grant(caller: Caller, project_id: str, role: RoleRow) -> None:
    """``Forbidden`` unless ``caller`` holds every permission of ``role`` in the project."""
    if caller.is_platform_admin:
        return
    held = caller.roles.get(project_id, frozenset())
    missing = [p for p in role.permissions if not grants(held, p)]
    if missing:
        raise Forbidden(
            f"role {role.name!r} grants more than your own role here ({', '.join(missing)})",
            reason="role_exceeds_yours",
            missing=missing,
        )


async def list_members(
    *, svc: Services, project: str, caller: Caller, req: ListRequest
) -> Page[Any]:
    """A page of the project's members (the Query API over ``specs.MEMBERS``: ``username``,
    ``role`` and ``user.*`` / ``role.*`` fields too)."""
    p = plan(specs.MEMBERS, Member, req)
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        require(caller, "member:list", row.id)
        p = replace(p, related=list(dict.fromkeys([*p.related, "user.name", "role.name"])))
        where = [MembershipRow.project_id == row.id]
        rows, total = await query_rows(s, specs.MEMBERS, p, req, where)
    items = [
        Member(
            project_id=r[0].project_id,
            user_id=r[0].user_id,
            username=r._mapping["user.name"],
            role=r._mapping["role.name"],
            created_at=r[0].created_at,
        )
        for r in rows
    ]
    return page_of(items, rows, total, p, req)


async def add_member(*, svc: Services, project: str, spec: MemberAdd, caller: Caller) -> Operation:
    """Give a user a role in the project; ``Conflict`` (reason ``already_member``) if they have
    one (change it with ``update_member``)."""
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        require(caller, "member:add", row.id)
        user = await get_row(s, UserRow, spec.user, "user")
        role = await get_row(s, RoleRow, spec.role, "role")
        _may_grant(caller, row.id, role)
        taken = Conflict(f"{user.name} is a member of {row.name} already", reason="already_member")
        existing = await s.scalar(
            select(MembershipRow.id).where(
                MembershipRow.project_id == row.id, MembershipRow.user_id == user.id
            )
        )
        if existing is not None:
            raise taken
        s.add(MembershipRow(user_id=user.id, project_id=row.id, role_id=role.id))
        return await finish(
            svc,
            s,
            caller,
            type="member.add",
            kind="user",
            target_id=user.id,
            project_id=row.id,
            conflict=taken,
        )


async def _membership(
    s: AsyncSession, project_id: str, user_ref: str
) -> tuple[MembershipRow, UserRow, RoleRow]:
    """The membership of ``user_ref`` (id or name) in the project; ``NotFound`` if none."""
    found = (
        await s.execute(
            select(MembershipRow, UserRow, RoleRow)
            .join(UserRow, UserRow.id == MembershipRow.user_id)
            .join(RoleRow, RoleRow.id == MembershipRow.role_id)
            .where(
                MembershipRow.project_id == project_id,
                (UserRow.id == user_ref) | (UserRow.name == user_ref),
            )
        )
    ).first()
    if found is None:
        raise NotFound(f"{user_ref!r} is not a member of this project", kind="member", ref=user_ref)
    return found[0], found[1], found[2]


async def update_member(
    *, svc: Services, project: str, user: str, spec: MemberUpdate, caller: Caller
) -> Operation:
    """Change a member's role (the caller must be able to grant both the old and the new)."""
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        require(caller, "member:update", row.id)
        membership, member, old = await _membership(s, row.id, user)
        new = await get_row(s, RoleRow, spec.role, "role")
        _may_grant(caller, row.id, old)
        _may_grant(caller, row.id, new)
        membership.role_id = new.id
        return await finish(
            svc,
            s,
            caller,
            type="member.update",
            kind="user",
            target_id=member.id,
            project_id=row.id,
        )


async def remove_member(*, svc: Services, project: str, user: str, caller: Caller) -> Operation:
    """Take a user out of the project. Their resources stay (owned by them, seen by the
    project's admins); they no longer see or touch them."""
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        require(caller, "member:remove", row.id)
        membership, member, role = await _membership(s, row.id, user)
        _may_grant(caller, row.id, role)
        await s.delete(membership)
        return await finish(
            svc,
            s,
            caller,
            type="member.remove",
            kind="user",
            target_id=member.id,
            project_id=row.id,
        )
