"""Project members: a user's role in a project (one per user and project).

Managed by whoever holds ``member:add|update|remove`` in the project (its project admins) or a
platform admin. No escalation: a non-platform caller can only give, change or take away a role
whose every permission they hold themselves in that project.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.common import ListQuery, Page
from corral.api.errors import Conflict, Forbidden, InvalidInput, NotFound
from corral.api.identity import Member, MemberAdd, MemberUpdate
from corral.api.operations import Operation
from corral.server.db.tables import MembershipRow, RoleRow, UserRow
from corral.server.identity.access import require
from corral.server.identity.caller import Caller, grants
from corral.server.services.context import Services
from corral.server.services.listing import get_row
from corral.server.services.projects import find_project, finish

_FIELDS: dict[str, Any] = {
    "user_id": MembershipRow.user_id,
    "username": UserRow.name,
    "role": RoleRow.name,
    "created_at": MembershipRow.created_at,
}
FILTERS = {"user_id", "username", "role"}
SORTS = set(_FIELDS)


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
    *, svc: Services, project: str, caller: Caller, query: ListQuery, filters: dict[str, Any]
) -> Page[Member]:
    """A page of the project's members (``filters`` from ``FILTERS``, sort from ``SORTS``)."""
    key = query.sort.lstrip("-")
    if key not in SORTS:
        raise InvalidInput(
            f"cannot sort members by {key!r} (allowed: {', '.join(sorted(SORTS))})", field=key
        )
    async with svc.sessionmaker() as s:
        row = await find_project(s, project, caller)
        require(caller, "member:list", row.id)
        conds = [MembershipRow.project_id == row.id]
        conds += [_FIELDS[k] == v for k, v in filters.items()]
        base = (
            select(MembershipRow, UserRow.name, RoleRow.name)
            .join(UserRow, UserRow.id == MembershipRow.user_id)
            .join(RoleRow, RoleRow.id == MembershipRow.role_id)
            .where(*conds)
        )
        total = await s.scalar(select(func.count()).select_from(base.subquery()))
        order = _FIELDS[key].desc() if query.sort.startswith("-") else _FIELDS[key].asc()
        rows = await s.execute(
            base.order_by(order, MembershipRow.id).limit(query.limit).offset(query.offset)
        )
        items = [
            Member(
                project_id=m.project_id,
                user_id=m.user_id,
                username=username,
                role=role,
                created_at=m.created_at,
            )
            for m, username, role in rows
        ]
    return Page[Member](items=items, total=int(total or 0), limit=query.limit, offset=query.offset)


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
