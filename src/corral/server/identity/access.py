"""Who sees what: SQL conditions that restrict a query to the rows a caller may see, and checks of
a caller's permission on one row.

Rules (for rows of project kinds, i.e. tables with ``project_id``, ``owner_id``, ``shared``):
- platform admins see everything (restricted to ``Caller.project_id`` when the request names one);
- in a project where the caller's role grants ``<kind>:see-all``: every row of the project;
- in the caller's other projects: the rows they own, rows marked ``shared`` and every row of a
  project with ``share_resources``;
- images without a project are public: everyone sees them;
- rows outside the caller's projects are never seen (a lookup answers 404, not 403: existence of
  other tenants' resources does not leak).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, true

from corral.api.errors import Forbidden
from corral.server.identity.caller import Caller


def visible(caller: Caller, table: Any, kind: str, *, public_if_no_project: bool = False) -> (
    ColumnElement[bool]
):  # fmt: skip
    """The condition selecting the rows of ``table`` (a project kind) ``caller`` may see."""
    cond: ColumnElement[bool]
    if caller.is_platform_admin:
        cond = true()
    else:
        see_all = caller.projects_with(f"{kind}:see-all")
        member = caller.projects_with(f"{kind}:list")
        own_or_shared = or_(
            table.owner_id == caller.user_id,
            table.shared.is_(True),
            table.project_id.in_(sorted(caller.sharing)) if caller.sharing else false(),
        )
        cond = or_(
            table.project_id.in_(see_all) if see_all else false(),
            and_(table.project_id.in_(member), own_or_shared) if member else false(),
        )
    if caller.project_id is not None:
        cond = and_(cond, table.project_id == caller.project_id)
    if public_if_no_project:
        cond = or_(cond, table.project_id.is_(None))
    return cond


def require(caller: Caller, permission: str, project_id: str | None) -> None:
    """``Forbidden`` unless ``caller`` holds ``permission`` in ``project_id`` (a row's project;
    None: a platform-wide row, which only platform admins may change)."""
    if project_id is None:
        if not caller.is_platform_admin:
            raise Forbidden(f"only platform admins may {permission} this", permission=permission)
        return
    if not caller.can(permission, project_id):
        raise Forbidden(f"your role in this project does not allow {permission}",
                        permission=permission)  # fmt: skip


def creation_project(caller: Caller, permission: str) -> str:
    """The project a resource created by ``caller`` goes to: the request's project, else the only
    project where the caller may create it. ``Forbidden`` / ``InvalidInput`` otherwise."""
    from corral.api.errors import InvalidInput

    if caller.project_id is not None:
        require(caller, permission, caller.project_id)
        return caller.project_id
    allowed = (
        caller.projects_with(permission) if not caller.is_platform_admin else list(caller.roles)
    )
    if len(allowed) == 1:
        return allowed[0]
    if not allowed:
        raise Forbidden(f"you may not {permission} in any project", permission=permission)
    raise InvalidInput(
        "you are in several projects: say which one (header X-Corral-Project or ?project=)",
        field="project",
    )


def visible_operations(caller: Caller, table: Any) -> ColumnElement[bool]:
    """Operations a caller sees: their own, and those of projects where they hold
    ``operation:see-all``; platform admins see all (of ``Caller.project_id`` if set)."""
    cond: ColumnElement[bool]
    if caller.is_platform_admin:
        cond = true()
    else:
        see_all = caller.projects_with("operation:see-all")
        cond = or_(
            table.user_id == caller.user_id,
            table.project_id.in_(see_all) if see_all else false(),
        )
    if caller.project_id is not None:
        cond = and_(cond, table.project_id == caller.project_id)
    return cond


def check_if_match(if_match: str | None, resource_id: str, updated_at: Any) -> None:
    """Optimistic concurrency: ``PreconditionFailed`` unless ``if_match`` (the ``If-Match``
    header: ``*`` or a list of entity tags) names the resource's current version. No header: no
    check."""
    from corral.api.common import etag_of
    from corral.api.errors import PreconditionFailed

    if if_match is None:
        return
    wanted = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    current = etag_of(resource_id, updated_at)
    if "*" not in wanted and current not in wanted:
        raise PreconditionFailed(
            "the resource changed since you read it (If-Match does not match its ETag)",
            etag=current,
        )
