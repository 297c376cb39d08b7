"""Deletion policies and the recycle bin: deleted VMs, volumes and images kept for a while.

With the ``delayed`` policy (the default) a delete moves the resource to the recycle bin: it is
hidden from its lists, renamed (its name is free again), stopped (a VM) but kept with its disks,
claims and quota, until it is restored or expunged (by hand, or when its retention has passed).
``never``: kept in the bin, never expunged while the policy holds. ``immediate``: deleted at
once, as ``?expunge=true`` does for one request.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from corral.api.common import Model, Name

RecycleKind = Literal["vm", "volume", "image"]


class DeletionPolicy(StrEnum):
    immediate = "immediate"
    delayed = "delayed"
    never = "never"


class KindPolicy(Model):
    """How deletes of one kind of resource behave."""

    policy: DeletionPolicy = DeletionPolicy.delayed
    retention_hours: float = Field(
        24.0, gt=0, le=24 * 3650, description="delayed: hours in the bin before the expunge"
    )


class DeletionPolicies(Model):
    """The platform's deletion policy per kind of resource."""

    vm: KindPolicy = Field(default_factory=KindPolicy)
    volume: KindPolicy = Field(default_factory=KindPolicy)
    image: KindPolicy = Field(default_factory=KindPolicy)


class RecycleItem(Model):
    """A deleted resource in the recycle bin. ``expunge_at`` None: kept until expunged (policy
    ``never``: not even then while the policy holds)."""

    id: str = Field(description="the bin entry's id")
    kind: RecycleKind
    resource_id: str
    name: str = Field(description="the resource's name before it was deleted")
    project_id: str | None
    owner_id: str | None
    deleted_by: str | None
    deleted_at: datetime
    expunge_at: datetime | None


class RecycleRestore(Model):
    """Restore a deleted resource, under its old name or ``name`` (if the old one was taken)."""

    name: Name | None = None
