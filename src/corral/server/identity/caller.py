"""The authenticated caller of a request, as every service and the audit log see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from corral.server.identity.permissions import EVERYONE, PLATFORM_KINDS

AuthMethod = Literal["token", "access_key", "agent", "none"]


@dataclass(frozen=True)
class Caller:
    """Who is calling and with which rights.

    ``roles`` maps each project the user is a member of to the permissions its role grants there.
    ``sharing``: the caller's projects whose resources every member sees (``share_resources``).
    ``project_id`` is the project the request is scoped to (``X-Corral-Project`` header or the
    ``project`` query parameter, by id or name), None when the request spans all of the user's
    projects. Platform admins (``is_platform_admin``) may do everything everywhere.
    """

    user_id: str
    username: str
    is_platform_admin: bool = False
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    sharing: frozenset[str] = frozenset()
    project_id: str | None = None
    method: AuthMethod = "token"
    access_key_id: str | None = None
    session_id: str | None = None

    def can(self, permission: str, project_id: str | None = None) -> bool:
        """Whether the caller holds ``permission`` (``kind:action``) in ``project_id`` (any of
        their projects when None). Grants may use ``kind:*`` and ``*``; platform kinds are for
        platform admins (and ``EVERYONE``'s reads) only."""
        if self.is_platform_admin:
            return True
        kind, _, _ = permission.partition(":")
        if kind in PLATFORM_KINDS:
            return permission in EVERYONE
        projects = [project_id] if project_id is not None else list(self.roles)
        return any(grants(self.roles.get(p, frozenset()), permission) for p in projects)

    def projects_with(self, permission: str) -> list[str]:
        """The caller's projects where they hold ``permission``."""
        return [p for p, held in self.roles.items() if grants(held, permission)]


def grants(held: frozenset[str], permission: str) -> bool:
    """Whether the permission set ``held`` grants ``permission``."""
    if permission in held or "*" in held:
        return True
    kind, _, _ = permission.partition(":")
    return f"{kind}:*" in held
