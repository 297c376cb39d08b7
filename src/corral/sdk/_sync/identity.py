"""Accessors of identity administration: ``client.users``, ``client.projects``,
``client.members``, ``client.roles`` and ``client.quotas``."""

# Generated from corral/sdk/_async/identity.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.api.common import DEFAULT_PAGE, Page
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
from corral.sdk._base import build, parse, parse_page, query, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection, Filter

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client


class Users(Collection[User]):
    """``client.users``: accounts (platform admins only, except ``me``)."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/users", User)

    def me(self) -> User:
        """The logged-in user's own account and memberships."""
        response = self._client.request("GET", f"{self._path}/me")
        return parse(User, response.content)

    def create(
        self,
        name: str,
        *,
        password: str,
        email: str | None = None,
        is_platform_admin: bool = False,
    ) -> Operation:
        """A user in no project yet (add them with ``client.members.add``). A weak password is
        ``InvalidInput`` with ``context["problems"]``."""
        body = build(
            UserCreate,
            name=name,
            password=password,
            email=email,
            is_platform_admin=is_platform_admin,
        )
        return self._client.operation("POST", self._path, body=body)

    def update(
        self,
        ref: str,
        *,
        email: str | None = None,
        enabled: bool | None = None,
        is_platform_admin: bool | None = None,
    ) -> Operation:
        """Change the given fields (``None``: unchanged; ``email=""`` removes the address)."""
        body = build(UserUpdate, email=email, enabled=enabled, is_platform_admin=is_platform_admin)
        return self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)

    def reset_password(self, ref: str, password: str | None = None) -> str | None:
        """Set the user's password, or with ``password=None`` have the server generate one and
        return it (shown this once). Ends the user's sessions; done when this returns."""
        if password is None:
            body = build(PasswordReset, generate=True)
        else:
            body = build(PasswordReset, password=password)
        path = f"{self._path}/{quote_ref(ref)}/password"
        result = self._client.call(PasswordResetResult, "POST", path, body=body)
        return result.password


class Projects(Collection[Project]):
    """``client.projects``: tenants. Everyone lists their own; platform admins manage them."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/projects", Project)

    def create(
        self, name: str, *, description: str = "", share_resources: bool = False
    ) -> Operation:
        body = build(
            ProjectCreate, name=name, description=description, share_resources=share_resources
        )
        return self._client.operation("POST", self._path, body=body)

    def update(
        self,
        ref: str,
        *,
        description: str | None = None,
        share_resources: bool | None = None,
    ) -> Operation:
        """Change the given fields (``None``: unchanged)."""
        body = build(ProjectUpdate, description=description, share_resources=share_resources)
        return self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class Members:
    """``client.members``: who has which role in a project (managed by its project admins)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @staticmethod
    def _path(project: str, user: str | None = None) -> str:
        path = f"/projects/{quote_ref(project)}/members"
        return path if user is None else f"{path}/{quote_ref(user)}"

    def list(
        self,
        project: str,
        *,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        sort: str | None = None,
        q: str | None = None,
        **filters: Filter,
    ) -> Page[Member]:
        """One page of the project's members; ``q`` / filters on ``user_id``, ``username``,
        ``role``, ``user.*``, ``role.*``."""
        params = query(filters, limit=limit, offset=offset, sort=sort, q=q)
        response = self._client.request("GET", self._path(project), params=params)
        return parse_page(Member, response.content)

    def add(self, project: str, user: str, role: str) -> Operation:
        """Give ``user`` (id or name) ``role`` (id or name) in ``project``."""
        body = build(MemberAdd, user=user, role=role)
        return self._client.operation("POST", self._path(project), body=body)

    def update(self, project: str, user: str, role: str) -> Operation:
        """Change a member's role."""
        body = build(MemberUpdate, role=role)
        return self._client.operation("PATCH", self._path(project, user), body=body)

    def remove(self, project: str, user: str) -> Operation:
        """Take ``user`` out of ``project``."""
        return self._client.operation("DELETE", self._path(project, user))


class Roles(Collection[Role]):
    """``client.roles``: built-in (read-only) and custom sets of project permissions."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/roles", Role)

    def create(self, name: str, *, permissions: list[str], description: str = "") -> Operation:
        """A custom role; unknown or platform permissions are ``InvalidInput``
        (``context["invalid"]``)."""
        body = build(RoleCreate, name=name, permissions=permissions, description=description)
        return self._client.operation("POST", self._path, body=body)

    def update(
        self,
        ref: str,
        *,
        permissions: list[str] | None = None,
        description: str | None = None,
    ) -> Operation:
        """Change a custom role (``None``: unchanged); its holders' rights change at once."""
        body = build(RoleUpdate, permissions=permissions, description=description)
        return self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class Quotas:
    """``client.quotas``: a project's limits and usage."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, project: str) -> Quota:
        response = self._client.request("GET", f"/projects/{quote_ref(project)}/quota")
        return parse(Quota, response.content)

    def update(self, project: str, *, force: bool = False, **limits: int | None) -> Operation:
        """Set the limits given (``vms=10``; ``None``: unlimited); the others are kept. A limit
        below the usage is a ``Conflict`` (reason ``quota_below_usage``) unless ``force``."""
        body = build(QuotaUpdate, force=force, **limits)
        return self._client.operation(
            "PUT",
            f"/projects/{quote_ref(project)}/quota",
            content=body.model_dump_json(exclude_unset=True),  # keeps the nulls: unlimited
            headers={"Content-Type": "application/json"},
        )
