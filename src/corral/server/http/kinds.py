"""The resource kinds the API serves at ``/api/v1/<collection>/{ref}``: one table that generic
mechanisms (tag routes, ``If-Match`` checks, ``ETag`` headers) walk, so a new kind gets them by
adding one line."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement

from corral.server.identity.caller import Caller
from corral.server.services import (
    hosts,
    images,
    inventory,
    networks,
    pools,
    projects,
    roles,
    security_groups,
    sg_rules,
    snapshots,
    subnets,
    users,
    vms,
    volumes,
)
from corral.server.services.listing import Kind


@dataclass(frozen=True)
class Tagged:
    """A kind of resource: where its routes live, and which of its rows a caller may see (None:
    platform kinds, reached only by the platform admins the route's permission admits)."""

    collection: str
    kind: Kind[Any, Any]
    visible: Callable[[Caller], ColumnElement[bool]] | None = None

    @property
    def project_kind(self) -> bool:
        return self.visible is not None


KINDS = (
    Tagged("vms", vms.VMS, vms.visible_vms),
    Tagged("images", images.IMAGES, images.visible_images),
    Tagged("zones", inventory.ZONES),
    Tagged("clusters", inventory.CLUSTERS),
    Tagged("offerings", inventory.OFFERINGS),
    Tagged("hosts", hosts.HOSTS),
    Tagged("users", users.USERS),
    Tagged("projects", projects.PROJECTS),
    Tagged("roles", roles.ROLES),
    Tagged("storage-pools", pools.POOLS),
    Tagged("volumes", volumes.VOLUMES, volumes.visible_volumes),
    Tagged("snapshots", snapshots.SNAPSHOTS, snapshots.visible_snapshots),
    Tagged("switches", networks.SWITCHES),
    Tagged("port-groups", networks.PORT_GROUPS),
    Tagged("subnets", subnets.SUBNETS),
    Tagged("security-groups", security_groups.GROUPS, sg_rules.visible_groups),
)
BY_COLLECTION = {t.collection: t for t in KINDS}
