"""Identity administration: users, projects, roles, project members and project quotas.

Passwords and TOTP secrets are write-only: no model here ever carries a hash or a secret back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from corral.api.common import Model, Name, Ref, Resource
from corral.api.operations import Operation

UserName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$"),
]
"""A login name: 1-128 characters, letters, digits, ``_ . @ + -``, starting with a letter or digit."""

Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]

Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
"""A new password; its strength is checked by the server (422 ``invalid_input`` with
``context.reason = "weak_password"`` and ``context.problems``)."""

Permission = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""``kind:action``, ``kind:*`` or ``*`` (see ``GET /roles`` for the built-in roles)."""


class UserMembership(Model):
    """One of a user's projects and their role in it."""

    project_id: str
    project_name: str
    role: str


class User(Resource):
    """A user account. ``is_platform_admin``: may do everything everywhere."""

    email: str | None = None
    enabled: bool
    is_platform_admin: bool
    totp_enabled: bool
    memberships: list[UserMembership] = Field(default_factory=list)


class UserCreate(Model):
    name: UserName
    password: Password
    email: Email | None = None
    is_platform_admin: bool = False


class UserUpdate(Model):
    """Change the given fields (absent or null: unchanged; ``email: ""`` removes the address)."""

    email: Email | Annotated[str, StringConstraints(max_length=0)] | None = None
    enabled: bool | None = None
    is_platform_admin: bool | None = None


class PasswordReset(Model):
    """An administrator sets a user's password: give ``password``, or ``generate: true`` to have
    the server make one and return it (once) in the answer."""

    password: Password | None = None
    generate: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> PasswordReset:
        if (self.password is None) == (not self.generate):
            raise ValueError("give a password, or generate: true (not both)")
        return self


class PasswordResetResult(Operation):
    """The finished operation of a password reset, with the generated password (only when
    ``generate`` was asked: shown this once, never stored in clear)."""

    password: str | None = None


class Project(Resource):
    """A project (tenant). ``share_resources``: every member sees every resource of the project
    (otherwise members see their own resources and those marked shared)."""

    description: str = ""
    share_resources: bool


class ProjectCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)
    share_resources: bool = False


class ProjectUpdate(Model):
    description: str | None = Field(None, max_length=1024)
    share_resources: bool | None = None


class Role(Resource):
    """A set of project permissions. Built-in roles (``project-admin``, ``member``, ``viewer``)
    are defined by the server and cannot change."""

    description: str = ""
    builtin: bool
    permissions: list[str]


class RoleCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)
    permissions: list[Permission] = Field(min_length=1, max_length=256)


class RoleUpdate(Model):
    description: str | None = Field(None, max_length=1024)
    permissions: list[Permission] | None = Field(None, min_length=1, max_length=256)


class Member(Model):
    """A user's membership of a project."""

    project_id: str
    user_id: str
    username: str
    role: str
    created_at: datetime


class MemberAdd(Model):
    user: Ref = Field(description="user id or name")
    role: Ref = Field(description="role id or name")


class MemberUpdate(Model):
    role: Ref = Field(description="role id or name")


class QuotaItem(Model):
    """One resource of a quota. ``limit`` None: unlimited."""

    limit: int | None
    used: int


class Quota(Model):
    """A project's limits and what it uses now (``memory_mb`` in MiB, ``volume_gb`` in GiB)."""

    project_id: str
    vms: QuotaItem
    vcpus: QuotaItem
    memory_mb: QuotaItem
    volume_gb: QuotaItem
    snapshots: QuotaItem
    ips: QuotaItem
    images: QuotaItem


QUOTA_FIELDS = ("vms", "vcpus", "memory_mb", "volume_gb", "snapshots", "ips", "images")
"""The resources of ``Quota`` (the server's ``QUOTA_RESOURCES``)."""

Limit = Annotated[int | None, Field(ge=0, le=2**53)]


class QuotaUpdate(Model):
    """New limits. A resource named in the body gets that limit (null: unlimited); the others
    keep theirs. A limit below what the project uses now is refused (409 ``conflict``, reason
    ``quota_below_usage``) unless ``force``: the project then creates nothing more of it until
    its usage is back under the limit."""

    vms: Limit = None
    vcpus: Limit = None
    memory_mb: Limit = None
    volume_gb: Limit = None
    snapshots: Limit = None
    ips: Limit = None
    images: Limit = None
    force: bool = False

    def limits(self) -> dict[str, int | None]:
        """The limits the body names (explicit nulls included)."""
        return {f: getattr(self, f) for f in QUOTA_FIELDS if f in self.model_fields_set}
