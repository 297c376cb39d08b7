"""Projects (tenants): who sees which, create/update/delete; and ``finish``, the end of every
identity administration change.

Every change is a synchronous database change recorded as an already finished Operation (the
server's rule: every mutating call answers 202 + Operation) owned by the caller, so the caller
can fetch it. ``finish`` also clears the caller cache: memberships, roles and projects decide
every request's rights.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import Conflict, CorralError, InUse, NameTaken
from corral.api.identity import Project, ProjectCreate, ProjectUpdate
from corral.api.operations import Operation
from corral.server.db.tables import (
    ImageRow,
    MembershipRow,
    ProjectRow,
    QuotaRow,
    UserRow,
    VmRow,
)
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model


def project_model(r: ProjectRow) -> Project:
    return Project(
        id=r.id,
        name=r.name,
        description=r.description,
        share_resources=r.share_resources,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


PROJECTS = Kind("project", ProjectRow, project_model, specs.PROJECTS, Project)


def visible_projects(caller: Caller) -> ColumnElement[bool]:
    """The projects ``caller`` sees: all for platform admins, else the ones they are a member of
    (the request's project scope does not narrow this list)."""
    if caller.is_platform_admin:
        return true()
    return ProjectRow.id.in_(sorted(caller.roles))


async def find_project(s: AsyncSession, ref: str, caller: Caller) -> ProjectRow:
    """The project ``ref`` (id or name) if ``caller`` sees it; ``NotFound`` otherwise."""
    return await get_row(s, ProjectRow, ref, "project", where=visible_projects(caller))


async def finish(
    svc: Services,
    s: AsyncSession,
    caller: Caller,
    *,
    type: str,
    kind: str,
    target_id: str,
    project_id: str | None = None,
    conflict: CorralError | None = None,
) -> Operation:
    """Record a finished operation of ``caller``, commit ``s`` and forget the cached callers.
    A unique constraint hit at commit (a parallel request won) raises ``conflict`` (default:
    ``NameTaken``)."""
    op = svc.runner.create(
        s,
        type=type,
        target_type=kind,
        target_id=target_id,
        done=True,
        project_id=project_id,
        user_id=caller.user_id,
    )
    try:
        await s.commit()
    except IntegrityError as exc:
        raise (conflict or NameTaken(f"the {kind} name is taken", kind=kind)) from exc
    finally:
        svc.callers.clear()
    return op_model(op)


async def create_project(*, svc: Services, spec: ProjectCreate, caller: Caller) -> Operation:
    """A project with a quota row (no limits). Platform admins only (the route checks)."""
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, ProjectRow, spec.name, "project")
        row = ProjectRow(
            name=spec.name, description=spec.description, share_resources=spec.share_resources
        )
        s.add(row)
        await s.flush()
        s.add(QuotaRow(project_id=row.id))
        return await finish(
            svc,
            s,
            caller,
            type="project.create",
            kind="project",
            target_id=row.id,
            project_id=row.id,
        )


async def update_project(
    *, svc: Services, ref: str, spec: ProjectUpdate, caller: Caller
) -> Operation:
    async with svc.sessionmaker() as s:
        row = await find_project(s, ref, caller)
        for field, value in spec.model_dump(exclude_none=True).items():
            setattr(row, field, value)
        return await finish(
            svc,
            s,
            caller,
            type="project.update",
            kind="project",
            target_id=row.id,
            project_id=row.id,
        )


async def _count(s: AsyncSession, col: Any, value: str) -> int:
    return int(await s.scalar(select(func.count()).where(col == value)) or 0)


async def delete_project(*, svc: Services, ref: str, caller: Caller) -> Operation:
    """Delete a project with its memberships and quota. ``InUse`` while it has VMs or images
    (delete them first): nothing of a tenant is ever deleted behind its back."""
    async with svc.sessionmaker() as s:
        row = await find_project(s, ref, caller)
        vms = await _count(s, VmRow.project_id, row.id)
        images = await _count(s, ImageRow.project_id, row.id)
        if vms or images:
            raise InUse(
                f"project {row.name!r} still has {vms} VM(s) and {images} image(s)",
                vms=vms,
                images=images,
            )
        await s.execute(delete(MembershipRow).where(MembershipRow.project_id == row.id))
        await s.execute(delete(QuotaRow).where(QuotaRow.project_id == row.id))
        await s.execute(
            update(UserRow)
            .where(UserRow.default_project_id == row.id)
            .values(default_project_id=None)
        )
        await s.delete(row)
        return await finish(
            svc,
            s,
            caller,
            type="project.delete",
            kind="project",
            target_id=row.id,
            conflict=Conflict(f"project {row.name!r} changed meanwhile: try again"),
        )
