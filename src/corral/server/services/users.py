"""User accounts: list (with their memberships), create, update, delete, administrator password
reset. Platform admins only, except ``me`` (every user's own profile).

Passwords are checked (``security.passwords.check_strength``) and hashed (argon2, slow: in a
worker thread, never while holding a database session: SQLite has one connection). No model
returned here carries a password hash or a TOTP secret. An admin cannot disable, demote or
delete their own account: so at least one enabled platform admin always remains.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.common import Page
from corral.api.errors import InUse, InvalidState
from corral.api.identity import (
    PasswordReset,
    PasswordResetResult,
    User,
    UserCreate,
    UserMembership,
    UserUpdate,
)
from corral.api.operations import Operation
from corral.server.db.tables import (
    ImageRow,
    MembershipRow,
    ProjectRow,
    RoleRow,
    TokenRow,
    UserRow,
    VmRow,
)
from corral.server.db.types import utcnow
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.security.passwords import check_strength, generate_password, hash_password
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, ListRequest, get_row
from corral.server.services.projects import finish


def user_model(r: UserRow, memberships: list[UserMembership]) -> User:
    return User(
        id=r.id,
        name=r.name,
        email=r.email,
        enabled=r.enabled,
        is_platform_admin=r.is_admin,
        totp_enabled=r.totp_enabled,
        memberships=memberships,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


@dataclass(frozen=True)
class _Users(Kind[UserRow, User]):
    async def models(self, s: AsyncSession, rows: list[UserRow]) -> list[User]:
        """Users with their memberships, loaded in one query for the whole page."""
        found: dict[str, list[UserMembership]] = {r.id: [] for r in rows}
        if rows:
            stmt = (
                select(MembershipRow.user_id, ProjectRow.id, ProjectRow.name, RoleRow.name)
                .join(ProjectRow, ProjectRow.id == MembershipRow.project_id)
                .join(RoleRow, RoleRow.id == MembershipRow.role_id)
                .where(MembershipRow.user_id.in_(list(found)))
                .order_by(ProjectRow.name)
            )
            for user_id, pid, pname, role in await s.execute(stmt):
                found[user_id].append(UserMembership(project_id=pid, project_name=pname, role=role))
        return [user_model(r, found[r.id]) for r in rows]


USERS = _Users("user", UserRow, lambda r: user_model(r, []), specs.USERS, User)


async def list_users(*, svc: Services, req: ListRequest) -> Page[Any]:
    """A page of users (the Query API over ``specs.USERS``: secret columns are not queryable);
    the ``project_id`` filter selects the members of that project."""
    project_id, req = req.pop("project_id")
    where: ColumnElement[bool] | None = None
    if project_id is not None:
        members = select(MembershipRow.user_id).where(MembershipRow.project_id == project_id)
        where = UserRow.id.in_(members)
    return await USERS.list(svc.sessionmaker, req, where)


async def get_user(*, svc: Services, ref: str) -> User:
    return await USERS.get(svc.sessionmaker, ref)


async def me(*, svc: Services, caller: Caller) -> User:
    """The caller's own account."""
    return await USERS.get(svc.sessionmaker, caller.user_id)


async def _hash(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def create_user(*, svc: Services, spec: UserCreate, caller: Caller) -> Operation:
    """A user (in no project yet: add them with the members API). ``InvalidInput`` with
    ``problems`` for a weak password; ``NameTaken`` for a taken name."""
    check_strength(spec.password, username=spec.name)
    hashed = await _hash(spec.password)
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, UserRow, spec.name, "user")
        row = UserRow(
            name=spec.name,
            password_hash=hashed,
            email=spec.email,
            is_admin=spec.is_platform_admin,
            password_changed_at=utcnow(),
        )
        s.add(row)
        await s.flush()
        return await finish(svc, s, caller, type="user.create", kind="user", target_id=row.id)


def _not_self(row: UserRow, caller: Caller, what: str) -> None:
    if row.id == caller.user_id:
        raise InvalidState(
            f"you cannot {what} your own account (ask another platform admin)",
            reason="own_account",
        )


async def update_user(*, svc: Services, ref: str, spec: UserUpdate, caller: Caller) -> Operation:
    """Change e-mail, enabled, platform admin. A disabled user is refused at their next request
    (their sessions are kept for when they are enabled again)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, UserRow, ref, "user")
        if spec.enabled is False:
            _not_self(row, caller, "disable")
        if spec.is_platform_admin is False:
            _not_self(row, caller, "demote")
        if spec.email is not None:
            row.email = spec.email or None
        if spec.enabled is not None:
            row.enabled = spec.enabled
        if spec.is_platform_admin is not None:
            row.is_admin = spec.is_platform_admin
        return await finish(svc, s, caller, type="user.update", kind="user", target_id=row.id)


async def _count(s: AsyncSession, col: Any, value: str) -> int:
    return int(await s.scalar(select(func.count()).where(col == value)) or 0)


async def delete_user(*, svc: Services, ref: str, caller: Caller) -> Operation:
    """Delete a user with their memberships, sessions and AccessKeys. ``InUse`` while they own
    VMs or images (delete them, or disable the user instead)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, UserRow, ref, "user")
        _not_self(row, caller, "delete")
        vms = await _count(s, VmRow.owner_id, row.id)
        images = await _count(s, ImageRow.owner_id, row.id)
        if vms or images:
            raise InUse(
                f"user {row.name!r} owns {vms} VM(s) and {images} image(s)",
                vms=vms,
                images=images,
            )
        await s.execute(delete(MembershipRow).where(MembershipRow.user_id == row.id))
        await s.delete(row)  # tokens and AccessKeys go with it (ON DELETE CASCADE)
        op = await finish(
            svc,
            s,
            caller,
            type="user.delete",
            kind="user",
            target_id=row.id,
            conflict=InUse(f"user {row.name!r} got a resource meanwhile: try again"),
        )
    _forget_sessions(svc, row.id)
    return op


def _forget_sessions(svc: Services, user_id: str) -> None:
    for token_id, (uid, _, _) in list(svc.sessions.items()):
        if uid == user_id:
            svc.sessions.pop(token_id, None)


async def reset_password(
    *, svc: Services, ref: str, spec: PasswordReset, caller: Caller
) -> PasswordResetResult:
    """Set a user's password (or a generated one, returned this once), end their sessions and
    lift a login lockout."""
    async with svc.sessionmaker() as s:
        name = (await get_row(s, UserRow, ref, "user")).name
    password = generate_password() if spec.generate else spec.password
    assert password is not None  # PasswordReset guarantees one of them
    check_strength(password, username=name)
    hashed = await _hash(password)
    async with svc.sessionmaker() as s:
        row = await get_row(s, UserRow, ref, "user")
        row.password_hash = hashed
        row.password_changed_at = utcnow()
        row.failed_logins = 0
        row.last_failed_at = None
        await s.execute(delete(TokenRow).where(TokenRow.user_id == row.id))
        op = await finish(svc, s, caller, type="user.password", kind="user", target_id=row.id)
    _forget_sessions(svc, row.id)
    return PasswordResetResult(**op.model_dump(), password=password if spec.generate else None)
