"""The permission catalog and the built-in roles.

A permission is ``kind:action``. Kinds of the platform (zones, clusters, hosts, offerings, storage
pools, switches, port groups, subnets, users, projects, roles, debug) are managed by platform
admins only: no project role can grant them, except reading offerings, port groups, subnets and
the caller's own projects. Project kinds (VMs, images, operations, quotas,
members, audit, tags, AccessKeys) are granted by the caller's role in the resource's project.
A role lists permissions, ``kind:*`` (every action on a kind) or ``*`` (everything of the project).
"""

from __future__ import annotations

from typing import Final

PLATFORM_KINDS: Final = frozenset(
    {"zone", "cluster", "host", "offering", "storage_pool", "user", "project", "role", "debug",
     "account", "deletion_policy", "switch", "port_group", "subnet"}
)  # fmt: skip
PROJECT_KINDS: Final = frozenset(
    {"vm", "volume", "snapshot", "image", "operation", "quota", "member", "audit", "tag",
     "access_key", "recycle_bin", "security_group"}
)  # fmt: skip

ACTIONS: Final[dict[str, tuple[str, ...]]] = {
    "zone": ("list", "get", "create", "update", "delete"),
    "cluster": ("list", "get", "create", "update", "delete"),
    "host": ("list", "get", "create", "update", "delete"),
    "offering": ("list", "get", "create", "update", "delete"),
    "storage_pool": ("list", "get", "create", "update", "delete"),
    "user": ("list", "get", "create", "update", "delete"),
    "project": ("list", "get", "create", "update", "delete"),
    "role": ("list", "get", "create", "update", "delete"),
    "debug": ("faults",),
    "account": ("manage",),
    "deletion_policy": ("get", "update"),
    "switch": ("list", "get", "create", "update", "delete"),
    "port_group": ("list", "get", "create", "update", "delete"),
    "subnet": ("list", "get", "create", "update", "delete"),
    "vm": ("list", "get", "create", "update", "delete", "power", "console", "see-all"),
    "volume": ("list", "get", "create", "update", "delete", "see-all"),
    "snapshot": ("list", "get", "create", "update", "delete", "see-all"),
    "image": ("list", "get", "create", "update", "delete", "see-all"),
    "operation": ("list", "get", "cancel", "see-all"),
    "quota": ("get", "update"),
    "member": ("list", "add", "update", "remove"),
    "audit": ("list",),
    "tag": ("add", "remove"),
    "access_key": ("list", "create", "update", "delete"),
    "recycle_bin": ("list", "restore", "expunge"),
    "security_group": ("list", "get", "create", "update", "delete", "see-all"),
}
"""Every permission that exists (``kind: actions``). ``see-all``: see every resource of the kind
in the project, not only one's own and shared ones."""

EVERYONE: Final = frozenset(
    {"offering:list", "offering:get", "project:list", "project:get", "account:manage",
     "deletion_policy:get", "port_group:list", "port_group:get", "subnet:list", "subnet:get"}
)  # fmt: skip
"""What every authenticated user may do (platform reads a self-service user needs; their own
password, two-factor authentication and sessions: ``account:manage``)."""

PLATFORM_ADMIN: Final = "platform-admin"

BUILTIN_ROLES: Final[dict[str, tuple[str, list[str]]]] = {
    "project-admin": (
        "everything in the project: all its resources, its members, its audit log",
        ["vm:*", "volume:*", "snapshot:*", "image:*", "operation:*", "quota:get", "member:*",
         "audit:list", "tag:*", "access_key:*", "recycle_bin:*", "security_group:*"],
    ),
    "member": (
        "creates and uses resources; sees their own and shared ones",
        ["vm:list", "vm:get", "vm:create", "vm:update", "vm:delete", "vm:power", "vm:console",
         "volume:list", "volume:get", "volume:create", "volume:update", "volume:delete",
         "snapshot:list", "snapshot:get", "snapshot:create", "snapshot:update", "snapshot:delete",
         "image:list", "image:get", "image:create", "image:update", "image:delete",
         "operation:list", "operation:get", "operation:cancel", "quota:get", "member:list",
         "tag:*", "access_key:*", "recycle_bin:list", "recycle_bin:restore",
         "recycle_bin:expunge", "security_group:list", "security_group:get",
         "security_group:create", "security_group:update", "security_group:delete"],
    ),
    "viewer": (
        "reads what is shared with the project's members",
        ["vm:list", "vm:get", "volume:list", "volume:get", "snapshot:list", "snapshot:get",
         "image:list", "image:get", "operation:list", "operation:get", "quota:get",
         "member:list", "access_key:*", "recycle_bin:list", "security_group:list",
         "security_group:get"],
    ),
}  # fmt: skip
"""Project roles created at start-up and kept as defined here (description, permissions)."""


def all_permissions() -> list[str]:
    return [f"{kind}:{action}" for kind, actions in ACTIONS.items() for action in actions]


def check_permission_names(perms: list[str]) -> list[str]:
    """The entries of ``perms`` that are not valid for a project role (unknown, or platform)."""
    bad = []
    for p in perms:
        kind, _, action = p.partition(":")
        if p == "*":
            continue
        if kind not in PROJECT_KINDS or (action != "*" and action not in ACTIONS[kind]):
            bad.append(p)
    return bad
