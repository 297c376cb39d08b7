"""Routes of identity administration: users, projects, project members, roles, quotas.

Every change answers 202 with an Operation that is already finished (the changes are
synchronous database updates; the rule of the API is one shape for every mutation); a password
reset's Operation also carries the generated password, if one was asked for. Lists page, sort
and filter like every other list.

Who may call what: users and roles are platform-admin business (``user:*``, ``role:*``), except
``GET /users/me`` (one's own profile, ``account:manage``: everyone). Everyone may list and get
projects but sees only their own (platform admins: all); creating, changing and deleting
projects is for platform admins. Members are managed with ``member:*`` in the project (its
project admins). ``quota:get`` in the project reads its quota; only platform admins change it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response

from corral.api.common import Page
from corral.api.identity import (
    Member,
    MemberAdd,
    MemberUpdate,
    PasswordReset,
    PasswordResetResult,
    Project,
    ProjectCreate,
    ProjectUpdate,
    Quota,
    QuotaUpdate,
    Role,
    RoleCreate,
    RoleUpdate,
    User,
    UserCreate,
    UserUpdate,
)
from corral.api.operations import Operation
from corral.server.http.deps import Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import IF_MATCH, VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import members, projects, quotas, roles, users

router = APIRouter(route_class=VersionedRoute)
A: dict[str, Any] = {"status_code": 202, "response_model": Operation}


@router.get("/users", response_model=Page[User], tags=["users"])
async def list_users(svc: Svc, caller: Annotated[Caller, allow("user:list")], q: Listing) -> Any:
    """Users; ``project_id=`` filters the members of a project."""
    return listed(await users.list_users(svc=svc, req=q))


@router.get("/users/me", response_model=User, tags=["users"])
async def get_me(svc: Svc, caller: Annotated[Caller, allow("account:manage")]) -> User:
    """The caller's own account and memberships (every user may read it)."""
    return await users.me(svc=svc, caller=caller)


@router.get("/users/{ref}", response_model=User, tags=["users"])
async def get_user(ref: str, svc: Svc, caller: Annotated[Caller, allow("user:get")]) -> User:
    return await users.get_user(svc=svc, ref=ref)


@router.post("/users", **A, tags=["users"])
async def create_user(
    spec: UserCreate, response: Response, svc: Svc, caller: Annotated[Caller, allow("user:create")]
) -> Operation:
    """422 ``invalid_input`` (``context.reason = "weak_password"``, ``context.problems``) for a
    weak password; 409 ``name_taken``."""
    return accepted(response, await users.create_user(svc=svc, spec=spec, caller=caller))


@router.patch("/users/{ref}", **A, dependencies=[IF_MATCH], tags=["users"])
async def update_user(
    ref: str,
    spec: UserUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("user:update")],
) -> Operation:
    """409 ``invalid_state`` (reason ``own_account``): one cannot disable or demote oneself."""
    return accepted(response, await users.update_user(svc=svc, ref=ref, spec=spec, caller=caller))


@router.delete("/users/{ref}", **A, dependencies=[IF_MATCH], tags=["users"])
async def delete_user(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("user:delete")]
) -> Operation:
    """409 ``in_use`` while the user owns VMs or images; ``invalid_state`` for oneself."""
    return accepted(response, await users.delete_user(svc=svc, ref=ref, caller=caller))


@router.post(
    "/users/{ref}/password", status_code=202, response_model=PasswordResetResult, tags=["users"]
)
async def reset_password(
    ref: str,
    spec: PasswordReset,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("user:update")],
) -> PasswordResetResult:
    """Set a user's password (``generate``: a random one, returned once in ``password``); ends
    the user's sessions and lifts a login lockout."""
    op = await users.reset_password(svc=svc, ref=ref, spec=spec, caller=caller)
    response.headers["Location"] = f"/api/v1/operations/{op.id}"
    return op


@router.get("/projects", response_model=Page[Project], tags=["projects"])
async def list_projects(
    svc: Svc, caller: Annotated[Caller, allow("project:list")], q: Listing
) -> Any:
    """The caller's projects (platform admins: every project)."""
    return listed(
        await projects.PROJECTS.list(svc.sessionmaker, q, projects.visible_projects(caller))
    )


@router.get("/projects/{ref}", response_model=Project, tags=["projects"])
async def get_project(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("project:get")]
) -> Project:
    return await projects.PROJECTS.get(svc.sessionmaker, ref, projects.visible_projects(caller))


@router.post("/projects", **A, tags=["projects"])
async def create_project(
    spec: ProjectCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("project:create")],
) -> Operation:
    return accepted(response, await projects.create_project(svc=svc, spec=spec, caller=caller))


@router.patch("/projects/{ref}", **A, dependencies=[IF_MATCH], tags=["projects"])
async def update_project(
    ref: str,
    spec: ProjectUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("project:update")],
) -> Operation:
    op = await projects.update_project(svc=svc, ref=ref, spec=spec, caller=caller)
    return accepted(response, op)


@router.delete("/projects/{ref}", **A, dependencies=[IF_MATCH], tags=["projects"])
async def delete_project(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("project:delete")]
) -> Operation:
    """409 ``in_use`` while the project has VMs or images."""
    return accepted(response, await projects.delete_project(svc=svc, ref=ref, caller=caller))


@router.get("/projects/{ref}/members", response_model=Page[Member], tags=["projects"])
async def list_members(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("member:list")], q: Listing
) -> Any:
    return listed(await members.list_members(svc=svc, project=ref, caller=caller, req=q))


@router.post("/projects/{ref}/members", **A, tags=["projects"])
async def add_member(
    ref: str,
    spec: MemberAdd,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("member:add")],
) -> Operation:
    """409 ``conflict`` (reason ``already_member``); 403 when the role grants more than the
    caller's own role in the project."""
    op = await members.add_member(svc=svc, project=ref, spec=spec, caller=caller)
    return accepted(response, op)


@router.patch("/projects/{ref}/members/{user}", **A, tags=["projects"])
async def update_member(
    ref: str,
    user: str,
    spec: MemberUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("member:update")],
) -> Operation:
    op = await members.update_member(svc=svc, project=ref, user=user, spec=spec, caller=caller)
    return accepted(response, op)


@router.delete("/projects/{ref}/members/{user}", **A, tags=["projects"])
async def remove_member(
    ref: str,
    user: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("member:remove")],
) -> Operation:
    op = await members.remove_member(svc=svc, project=ref, user=user, caller=caller)
    return accepted(response, op)


@router.get("/projects/{ref}/quota", response_model=Quota, tags=["projects"])
async def get_quota(ref: str, svc: Svc, caller: Annotated[Caller, allow("quota:get")]) -> Quota:
    return await quotas.get_quota(svc=svc, project=ref, caller=caller)


@router.put("/projects/{ref}/quota", **A, tags=["projects"])
async def update_quota(
    ref: str,
    spec: QuotaUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("quota:update")],
) -> Operation:
    """Set the limits the body names (null: unlimited); the others are kept. 409 ``conflict``
    (reason ``quota_below_usage``) for a limit below the usage, unless ``force``."""
    op = await quotas.update_quota(svc=svc, project=ref, spec=spec, caller=caller)
    return accepted(response, op)


@router.get("/roles", response_model=Page[Role], tags=["roles"])
async def list_roles(svc: Svc, caller: Annotated[Caller, allow("role:list")], q: Listing) -> Any:
    return listed(await roles.ROLES.list(svc.sessionmaker, q))


@router.get("/roles/{ref}", response_model=Role, tags=["roles"])
async def get_role(ref: str, svc: Svc, caller: Annotated[Caller, allow("role:get")]) -> Role:
    return await roles.ROLES.get(svc.sessionmaker, ref)


@router.post("/roles", **A, tags=["roles"])
async def create_role(
    spec: RoleCreate, response: Response, svc: Svc, caller: Annotated[Caller, allow("role:create")]
) -> Operation:
    """422 ``invalid_input`` with ``context.invalid``: the permissions a project role cannot have."""
    return accepted(response, await roles.create_role(svc=svc, spec=spec, caller=caller))


@router.patch("/roles/{ref}", **A, dependencies=[IF_MATCH], tags=["roles"])
async def update_role(
    ref: str,
    spec: RoleUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("role:update")],
) -> Operation:
    """409 ``invalid_state`` (reason ``builtin_role``) for a built-in role."""
    return accepted(response, await roles.update_role(svc=svc, ref=ref, spec=spec, caller=caller))


@router.delete("/roles/{ref}", **A, dependencies=[IF_MATCH], tags=["roles"])
async def delete_role(
    ref: str, response: Response, svc: Svc, caller: Annotated[Caller, allow("role:delete")]
) -> Operation:
    """409 ``invalid_state`` for a built-in role, ``in_use`` for a role some member holds."""
    return accepted(response, await roles.delete_role(svc=svc, ref=ref, caller=caller))
