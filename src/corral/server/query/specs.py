"""Ready-made query specs: what each list endpoint lets callers filter, sort and select.

Names follow the API models (``corral.api``). Secrets and internals (``hosts.token_sealed``, ``hosts.token_digest``,
``hosts.cert_pem``, ``vms.vnc_password``, ``vms.claimed``, password hashes, TOTP secrets, JSON
columns) are deliberately absent: a spec is an allow-list, and filtering or sorting on a secret
would be an oracle for it.
"""

from __future__ import annotations

from corral.api.hosts import HostStatus
from corral.api.images import ImageStatus
from corral.api.networks import SegmentType
from corral.api.operations import OperationStatus
from corral.api.snapshots import SnapshotKind, SnapshotStatus
from corral.api.storage import PoolState, PoolType
from corral.api.vms import PowerState, VmStatus
from corral.api.volumes import VolumeRole, VolumeStatus
from corral.server.db.tables import (
    AccessKeyRow,
    ClusterRow,
    HostRow,
    ImageRow,
    MembershipRow,
    OfferingRow,
    OperationRow,
    PortGroupRow,
    ProjectRow,
    RoleRow,
    SecurityGroupRow,
    SnapshotRow,
    StoragePoolRow,
    SubnetRow,
    SwitchRow,
    UserRow,
    VmRow,
    VolumeRow,
    ZoneRow,
)
from corral.server.query.schema import Field, QuerySpec, Relation

ZONES = QuerySpec(
    name="zone",
    table=ZoneRow,
    fields={
        "id": ZoneRow.id,
        "name": ZoneRow.name,
        "description": ZoneRow.description,
        "created_at": ZoneRow.created_at,
        "updated_at": ZoneRow.updated_at,
    },
)

CLUSTERS = QuerySpec(
    name="cluster",
    table=ClusterRow,
    fields={
        "id": ClusterRow.id,
        "name": ClusterRow.name,
        "zone_id": ClusterRow.zone_id,
        "description": ClusterRow.description,
        "cpu_overcommit": ClusterRow.cpu_overcommit,
        "memory_overcommit": ClusterRow.memory_overcommit,
        "created_at": ClusterRow.created_at,
        "updated_at": ClusterRow.updated_at,
    },
    relations={"zone": Relation(lambda: ZONES, ClusterRow.zone_id)},
)

HOSTS = QuerySpec(
    name="host",
    table=HostRow,
    fields={
        "id": HostRow.id,
        "name": HostRow.name,
        "cluster_id": HostRow.cluster_id,
        "url": HostRow.url,
        "status": Field(HostRow.status, HostStatus),
        "enabled": HostRow.enabled,
        "capacity.cpus_total": HostRow.cpus_capacity,
        "capacity.cpus_used": HostRow.cpus_used,
        "capacity.memory_mb_total": HostRow.memory_mb_capacity,
        "capacity.memory_mb_used": HostRow.memory_mb_used,
        "capacity.disk_gb_total": HostRow.disk_gb_capacity,
        "capacity.disk_gb_used": HostRow.disk_gb_used,
        "last_heartbeat_at": HostRow.last_heartbeat_at,
        "created_at": HostRow.created_at,
        "updated_at": HostRow.updated_at,
    },
    relations={"cluster": Relation(lambda: CLUSTERS, HostRow.cluster_id)},
    aliases={
        name: f"capacity.{name}"
        for name in (
            "cpus_total",
            "cpus_used",
            "memory_mb_total",
            "memory_mb_used",
            "disk_gb_total",
            "disk_gb_used",
        )
    },
)

USERS = QuerySpec(
    name="user",
    table=UserRow,
    fields={
        "id": UserRow.id,
        "name": UserRow.name,
        "email": UserRow.email,
        "enabled": UserRow.enabled,
        "is_platform_admin": UserRow.is_admin,
        "totp_enabled": UserRow.totp_enabled,
        "created_at": UserRow.created_at,
        "updated_at": UserRow.updated_at,
    },
)

PROJECTS = QuerySpec(
    name="project",
    table=ProjectRow,
    fields={
        "id": ProjectRow.id,
        "name": ProjectRow.name,
        "description": ProjectRow.description,
        "share_resources": ProjectRow.share_resources,
        "created_at": ProjectRow.created_at,
        "updated_at": ProjectRow.updated_at,
    },
)

ROLES = QuerySpec(
    name="role",
    table=RoleRow,
    fields={
        "id": RoleRow.id,
        "name": RoleRow.name,
        "description": RoleRow.description,
        "builtin": RoleRow.builtin,
        "created_at": RoleRow.created_at,
        "updated_at": RoleRow.updated_at,
    },
)

MEMBERS = QuerySpec(
    name="member",
    table=MembershipRow,
    fields={
        "id": MembershipRow.id,
        "project_id": MembershipRow.project_id,
        "user_id": MembershipRow.user_id,
        "created_at": MembershipRow.created_at,
    },
    relations={
        "user": Relation(lambda: USERS, MembershipRow.user_id),
        "role": Relation(lambda: ROLES, MembershipRow.role_id),
        "project": Relation(lambda: PROJECTS, MembershipRow.project_id),
    },
    aliases={"username": "user.name", "role": "role.name"},
)

ACCESS_KEYS = QuerySpec(
    name="access_key",
    table=AccessKeyRow,
    fields={
        "id": AccessKeyRow.id,
        "user_id": AccessKeyRow.user_id,
        "description": AccessKeyRow.description,
        "enabled": AccessKeyRow.enabled,
        "created_at": AccessKeyRow.created_at,
        "last_used_at": AccessKeyRow.last_used_at,
        "expires_at": AccessKeyRow.expires_at,
    },
    relations={"user": Relation(lambda: USERS, AccessKeyRow.user_id)},
)

IMAGES = QuerySpec(
    name="image",
    table=ImageRow,
    fields={
        "id": ImageRow.id,
        "name": ImageRow.name,
        "status": Field(ImageRow.status, ImageStatus),
        "format": ImageRow.format,
        "size_bytes": ImageRow.size_bytes,
        "virtual_size_bytes": ImageRow.virtual_size_bytes,
        "sha256": ImageRow.sha256,
        "source_url": ImageRow.source_url,
        "project_id": ImageRow.project_id,
        "owner_id": ImageRow.owner_id,
        "shared": ImageRow.shared,
        "created_at": ImageRow.created_at,
        "updated_at": ImageRow.updated_at,
    },
    relations={
        "project": Relation(lambda: PROJECTS, ImageRow.project_id),
        "owner": Relation(lambda: USERS, ImageRow.owner_id),
    },
    aliases={"size": "size_bytes", "virtual_size": "virtual_size_bytes"},
)

OFFERINGS = QuerySpec(
    name="offering",
    table=OfferingRow,
    fields={
        "id": OfferingRow.id,
        "name": OfferingRow.name,
        "cpus": OfferingRow.cpus,
        "memory_mb": OfferingRow.memory_mb,
        "disk_gb": OfferingRow.disk_gb,
        "created_at": OfferingRow.created_at,
        "updated_at": OfferingRow.updated_at,
    },
    aliases={"memory": "memory_mb", "disk": "disk_gb"},
)

VMS = QuerySpec(
    name="vm",
    table=VmRow,
    fields={
        "id": VmRow.id,
        "name": VmRow.name,
        "status": Field(VmRow.status, VmStatus),
        "power_state": Field(VmRow.power_state, PowerState),
        "cpus": VmRow.cpus,
        "memory_mb": VmRow.memory_mb,
        "disk_gb": VmRow.disk_gb,
        "root_volume_id": VmRow.root_volume_id,
        "image_id": VmRow.image_id,
        "offering_id": VmRow.offering_id,
        "host_id": VmRow.host_id,
        "cdrom_image_id": VmRow.cdrom_image_id,
        "error": VmRow.error,
        "project_id": VmRow.project_id,
        "owner_id": VmRow.owner_id,
        "shared": VmRow.shared,
        "created_at": VmRow.created_at,
        "updated_at": VmRow.updated_at,
    },
    relations={
        "host": Relation(lambda: HOSTS, VmRow.host_id),
        "image": Relation(lambda: IMAGES, VmRow.image_id),
        "offering": Relation(lambda: OFFERINGS, VmRow.offering_id),
        "project": Relation(lambda: PROJECTS, VmRow.project_id),
        "owner": Relation(lambda: USERS, VmRow.owner_id),
    },
    aliases={"state": "power_state", "memory": "memory_mb", "disk": "disk_gb"},
)

OPERATIONS = QuerySpec(
    name="operation",
    table=OperationRow,
    fields={
        "id": OperationRow.id,
        "type": OperationRow.type,
        "target_type": OperationRow.target_type,
        "target_id": OperationRow.target_id,
        "status": Field(OperationRow.status, OperationStatus),
        "progress": OperationRow.progress,
        "message": OperationRow.message,
        "created_at": OperationRow.created_at,
        "started_at": OperationRow.started_at,
        "finished_at": OperationRow.finished_at,
        "project_id": OperationRow.project_id,
        "user_id": OperationRow.user_id,
    },
    relations={
        "project": Relation(lambda: PROJECTS, OperationRow.project_id),
        "user": Relation(lambda: USERS, OperationRow.user_id),
    },
)

STORAGE_POOLS = QuerySpec(
    name="storage_pool",
    table=StoragePoolRow,
    fields={
        "id": StoragePoolRow.id,
        "name": StoragePoolRow.name,
        "type": Field(StoragePoolRow.type, PoolType),
        "state": Field(StoragePoolRow.state, PoolState),
        "overcommit": StoragePoolRow.overcommit,
        "capacity.total_gb": StoragePoolRow.total_gb,
        "capacity.used_gb": StoragePoolRow.used_gb,
        "capacity.allocated_gb": StoragePoolRow.allocated_gb,
        "created_at": StoragePoolRow.created_at,
        "updated_at": StoragePoolRow.updated_at,
    },
    aliases={name: f"capacity.{name}" for name in ("total_gb", "used_gb", "allocated_gb")},
)
"""Storage pools: ``settings`` (JSON) and the sealed credentials are deliberately absent."""

VOLUMES = QuerySpec(
    name="volume",
    table=VolumeRow,
    fields={
        "id": VolumeRow.id,
        "name": VolumeRow.name,
        "status": Field(VolumeRow.status, VolumeStatus),
        "size_gb": VolumeRow.size_gb,
        "format": VolumeRow.format,
        "pool_id": VolumeRow.pool_id,
        "host_id": VolumeRow.host_id,
        "instantiated": VolumeRow.instantiated,
        "shareable": VolumeRow.shareable,
        "role": Field(VolumeRow.role, VolumeRole),
        "error": VolumeRow.error,
        "project_id": VolumeRow.project_id,
        "owner_id": VolumeRow.owner_id,
        "shared": VolumeRow.shared,
        "created_at": VolumeRow.created_at,
        "updated_at": VolumeRow.updated_at,
    },
    relations={
        "pool": Relation(lambda: STORAGE_POOLS, VolumeRow.pool_id),
        "host": Relation(lambda: HOSTS, VolumeRow.host_id),
        "project": Relation(lambda: PROJECTS, VolumeRow.project_id),
        "owner": Relation(lambda: USERS, VolumeRow.owner_id),
    },
    aliases={"size": "size_gb", "state": "status"},
)
"""Volumes: ``qos`` (JSON) and attachments are not queryable yet."""

SNAPSHOTS = QuerySpec(
    name="snapshot",
    table=SnapshotRow,
    fields={
        "id": SnapshotRow.id,
        "name": SnapshotRow.name,
        "volume_id": SnapshotRow.volume_id,
        "parent_id": SnapshotRow.parent_id,
        "status": Field(SnapshotRow.status, SnapshotStatus),
        "kind": Field(SnapshotRow.kind, SnapshotKind),
        "size_gb": SnapshotRow.size_gb,
        "description": SnapshotRow.description,
        "error": SnapshotRow.error,
        "project_id": SnapshotRow.project_id,
        "owner_id": SnapshotRow.owner_id,
        "shared": SnapshotRow.shared,
        "created_at": SnapshotRow.created_at,
        "updated_at": SnapshotRow.updated_at,
    },
    relations={
        "volume": Relation(lambda: VOLUMES, SnapshotRow.volume_id),
        "project": Relation(lambda: PROJECTS, SnapshotRow.project_id),
        "owner": Relation(lambda: USERS, SnapshotRow.owner_id),
    },
    aliases={"size": "size_gb", "state": "status"},
)
"""Snapshots: files and backings are the server's business, not queryable."""

SECURITY_GROUPS = QuerySpec(
    name="security_group",
    table=SecurityGroupRow,
    fields={
        "id": SecurityGroupRow.id,
        "name": SecurityGroupRow.name,
        "description": SecurityGroupRow.description,
        "intra_group": SecurityGroupRow.intra_group,
        "revision": SecurityGroupRow.revision,
        "project_id": SecurityGroupRow.project_id,
        "owner_id": SecurityGroupRow.owner_id,
        "shared": SecurityGroupRow.shared,
        "created_at": SecurityGroupRow.created_at,
        "updated_at": SecurityGroupRow.updated_at,
    },
    relations={
        "project": Relation(lambda: PROJECTS, SecurityGroupRow.project_id),
        "owner": Relation(lambda: USERS, SecurityGroupRow.owner_id),
    },
)
"""Security groups: their rules are read with the group (``GET /security-groups/{ref}``)."""

SWITCHES = QuerySpec(
    name="switch",
    table=SwitchRow,
    fields={
        "id": SwitchRow.id,
        "name": SwitchRow.name,
        "description": SwitchRow.description,
        "uplink": SwitchRow.uplink,
        "mtu": SwitchRow.mtu,
        "created_at": SwitchRow.created_at,
        "updated_at": SwitchRow.updated_at,
    },
)
"""Switches: attached clusters and per-host uplinks are not queryable."""

PORT_GROUPS = QuerySpec(
    name="port_group",
    table=PortGroupRow,
    fields={
        "id": PortGroupRow.id,
        "name": PortGroupRow.name,
        "switch_id": PortGroupRow.switch_id,
        "type": Field(PortGroupRow.type, SegmentType),
        "segment_id": PortGroupRow.segment_id,
        "description": PortGroupRow.description,
        "created_at": PortGroupRow.created_at,
        "updated_at": PortGroupRow.updated_at,
    },
    relations={"switch": Relation(lambda: SWITCHES, PortGroupRow.switch_id)},
    aliases={"switch": "switch.name"},
)
"""Port groups: ``switch=NAME`` (or ``switch.name``, ``switch_id``) filters by switch; ``mtu``
is computed (the switch's), not queryable."""

SUBNETS = QuerySpec(
    name="subnet",
    table=SubnetRow,
    fields={
        "id": SubnetRow.id,
        "name": SubnetRow.name,
        "port_group_id": SubnetRow.port_group_id,
        "ip_version": SubnetRow.ip_version,
        "cidr": SubnetRow.cidr,
        "gateway": SubnetRow.gateway,
        "dhcp": SubnetRow.dhcp,
        "description": SubnetRow.description,
        "created_at": SubnetRow.created_at,
        "updated_at": SubnetRow.updated_at,
    },
    relations={"port_group": Relation(lambda: PORT_GROUPS, SubnetRow.port_group_id)},
    aliases={"port_group": "port_group.name"},
)
"""Subnets: ranges, reserved and DNS servers (JSON) and the computed counts are not
queryable; ``port_group.switch.name`` reaches the switch."""

ALL: dict[str, QuerySpec] = {
    s.name: s
    for s in (
        ZONES,
        CLUSTERS,
        HOSTS,
        IMAGES,
        OFFERINGS,
        VMS,
        OPERATIONS,
        USERS,
        PROJECTS,
        ROLES,
        MEMBERS,
        ACCESS_KEYS,
        STORAGE_POOLS,
        VOLUMES,
        SNAPSHOTS,
        SECURITY_GROUPS,
        SWITCHES,
        PORT_GROUPS,
        SUBNETS,
    )
}
"""Every spec by resource kind name."""
