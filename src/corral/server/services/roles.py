"""Roles: the built-in ones (defined in code, read-only) and custom ones made of project
permissions (``identity.permissions.check_permission_names`` says which are valid)."""

from __future__ import annotations

from sqlalchemy import func, select

from corral.api.errors import InUse, InvalidInput, InvalidState
from corral.api.identity import Role, RoleCreate, RoleUpdate
from corral.api.operations import Operation
from corral.server.db.tables import MembershipRow, RoleRow
from corral.server.identity.caller import Caller
from corral.server.identity.permissions import check_permission_names
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.projects import finish


def role_model(r: RoleRow) -> Role:
    return Role(
        id=r.id,
        name=r.name,
        description=r.description,
        builtin=r.builtin,
        permissions=list(r.permissions),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


ROLES = Kind("role", RoleRow, role_model, specs.ROLES, Role)


def valid_permissions(perms: list[str]) -> list[str]:
    """``perms`` without duplicates (order kept); ``InvalidInput`` (context ``invalid``: the
    unknown or platform-only names) if any cannot be part of a project role."""
    bad = check_permission_names(perms)
    if bad:
        raise InvalidInput(
            f"not valid in a project role: {', '.join(bad)}", field="permissions", invalid=bad
        )
    return list(dict.fromkeys(perms))


def _not_builtin(row: RoleRow, verb: str) -> None:
    if row.builtin:
        raise InvalidState(
            f"role {row.name!r} is built-in: it cannot be {verb}; create a custom role instead",
            reason="builtin_role",
            role=row.name,
        )


async def create_role(*, svc: Services, spec: RoleCreate, caller: Caller) -> Operation:
    perms = valid_permissions(spec.permissions)
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, RoleRow, spec.name, "role")
        row = RoleRow(name=spec.name, description=spec.description, permissions=perms)
        s.add(row)
        await s.flush()
        return await finish(svc, s, caller, type="role.create", kind="role", target_id=row.id)


async def update_role(*, svc: Services, ref: str, spec: RoleUpdate, caller: Caller) -> Operation:
    """Change a custom role; its members' rights change with it at once."""
    perms = valid_permissions(spec.permissions) if spec.permissions is not None else None
    async with svc.sessionmaker() as s:
        row = await get_row(s, RoleRow, ref, "role")
        _not_builtin(row, "changed")
        if spec.description is not None:
            row.description = spec.description
        if perms is not None:
            row.permissions = perms
        return await finish(svc, s, caller, type="role.update", kind="role", target_id=row.id)


async def delete_role(*, svc: Services, ref: str, caller: Caller) -> Operation:
    """Delete a custom role nobody holds (``InUse`` with the number of memberships otherwise)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, RoleRow, ref, "role")
        _not_builtin(row, "deleted")
        held = await s.scalar(select(func.count()).where(MembershipRow.role_id == row.id))
        if held:
            raise InUse(f"role {row.name!r} is held by {held} member(s)", members=int(held))
        await s.delete(row)
        return await finish(
            svc,
            s,
            caller,
            type="role.delete",
            kind="role",
            target_id=row.id,
            conflict=InUse(f"role {row.name!r} was given to a member meanwhile"),
        )
