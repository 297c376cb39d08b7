"""The tables. They are not the contract: services turn rows into ``corral.api`` models."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corral.server.db.types import UTCDateTime, new_id, utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Timestamped:
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Owned:
    """A resource of a project: who owns it, and whether the project's members all see it."""

    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id"), nullable=True, index=True
    )
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)


class ZoneRow(Timestamped, Base):
    __tablename__ = "zones"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class ClusterRow(Timestamped, Base):
    __tablename__ = "clusters"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    cpu_overcommit: Mapped[float] = mapped_column(Float, default=4.0)
    memory_overcommit: Mapped[float] = mapped_column(Float, default=1.0)


class HostRow(Timestamped, Base):
    """A host. ``*_capacity`` = facts x cluster overcommit; ``*_used`` = sum of VM claims.

    Claims change only through conditional UPDATEs (``used + x <= capacity``) so parallel placements
    can never oversubscribe a host. The agent's token is never stored in plain text.
    """

    __tablename__ = "hosts"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    url: Mapped[str] = mapped_column(String(512))
    token_sealed: Mapped[str] = mapped_column(String(255))
    """The agent's bearer token, sealed with the master key (``server.agents.host_tokens``)."""
    token_digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    """SHA-256 (hex) of the token: what an agent's calls are looked up by."""
    cert_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="connecting")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    facts: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    cpus_capacity: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb_capacity: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb_capacity: Mapped[float] = mapped_column(Float, default=0)
    cpus_used: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb_used: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb_used: Mapped[float] = mapped_column(Float, default=0)
    last_heartbeat_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class ImageRow(Timestamped, Owned, Base):
    """An image. ``project_id`` None: a public image, seen by everyone, managed by platform admins."""

    __tablename__ = "images"
    name: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16), default="importing")
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """``vm``, ``volume`` or ``snapshot``: captured from that resource (``source_id``)."""
    source_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True)
    """Set for an image that exists only in that host's image cache (not in the image store),
    so VMs made from it are placed there: a linked-clone layer (``parent_id`` set), or a full
    clone's standalone base (``parent_id`` None) until ``image.publish`` sends it to the store."""
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    """The image a layer is a qcow2 overlay on (it cannot go while the layer exists)."""
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the last ``image.publish`` failed (the image then stays on its host); None: no
    failure."""

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_images_project_name"),)


class OfferingRow(Timestamped, Base):
    __tablename__ = "offerings"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)


class VmRow(Timestamped, Owned, Base):
    """A VM. ``claimed`` says whether its cpus/memory/disk are counted in its host's ``*_used``.
    Names are unique within a project."""

    __tablename__ = "vms"
    name: Mapped[str] = mapped_column(String(63), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    power_state: Mapped[str] = mapped_column(String(16), default="absent")
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True, index=True)
    offering_id: Mapped[str | None] = mapped_column(ForeignKey("offerings.id"), nullable=True)
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True, index=True)
    claimed: Mapped[bool] = mapped_column(Boolean, default=False)
    vnc_password: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cdrom_image_id: Mapped[str | None] = mapped_column(
        ForeignKey("images.id"), nullable=True, index=True
    )
    boot_order: Mapped[list[Any]] = mapped_column(default=lambda: ["hd"])
    root_volume_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The VM's root volume (on a storage pool, attached as ``vda``); None: the root disk is
    host-local, in its host agent's data directory."""

    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_vms_project_name"),)


class OperationRow(Base):
    """An operation and the workflow behind it. ``params`` are the workflow inputs."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    lock_key: Mapped[str | None] = mapped_column(String(80), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    project_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class StepRow(Base):
    """The journal: one row per workflow step started, written before the next step runs."""

    __tablename__ = "workflow_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_workflow_steps_op_idx", "operation_id", "idx", unique=True),)


class UserRow(Timestamped, Base):
    """A user. ``is_admin``: platform admin. ``totp_secret`` is sealed (``secretbox``);
    ``recovery_codes`` are salted hashes, None once used; ``failed_logins`` drives the lockout."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    totp_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    recovery_codes: Mapped[list[Any] | None] = mapped_column(nullable=True)
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    default_project_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ProjectRow(Timestamped, Base):
    """A project (tenant). ``share_resources``: every member sees every resource of the project
    (otherwise a resource is seen by its owner, the project's admins, and members if ``shared``)."""

    __tablename__ = "projects"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    share_resources: Mapped[bool] = mapped_column(Boolean, default=False)


class RoleRow(Timestamped, Base):
    """A set of permissions (``kind:action``, ``kind:*``, ``*``). Built-in roles cannot change."""

    __tablename__ = "roles"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    permissions: Mapped[list[Any]] = mapped_column(default=list)


class MembershipRow(Timestamped, Base):
    """A user's role in a project (one role per user and project)."""

    __tablename__ = "memberships"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id"), index=True)

    __table_args__ = (UniqueConstraint("user_id", "project_id", name="uq_membership"),)


QUOTA_RESOURCES = ("vms", "vcpus", "memory_mb", "volume_gb", "snapshots", "ips", "images")
"""What a project quota limits; each has ``<name>_limit`` (None: unlimited) and ``<name>_used``."""


class QuotaRow(Base):
    """A project's limits and usage. Usage changes only through conditional UPDATEs
    (``used + n <= limit``) in the transaction that creates the resource."""

    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    vms_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    vms_used: Mapped[int] = mapped_column(Integer, default=0)
    vcpus_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    vcpus_used: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memory_mb_used: Mapped[int] = mapped_column(BigInteger, default=0)
    volume_gb_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    volume_gb_used: Mapped[int] = mapped_column(BigInteger, default=0)
    snapshots_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshots_used: Mapped[int] = mapped_column(Integer, default=0)
    ips_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ips_used: Mapped[int] = mapped_column(Integer, default=0)
    images_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    images_used: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AccessKeyRow(Base):
    """An AccessKey: ``id`` is the AccessKey ID; the secret is sealed (``secretbox``): the server
    needs it to check signatures."""

    __tablename__ = "access_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class TagRow(Base):
    """A tag on a resource. User tags are managed through the API; system tags only by code."""

    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(32))
    tag: Mapped[str] = mapped_column(String(128))
    system: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", "tag", "system", name="uq_tag"),
        Index("ix_tags_lookup", "resource_type", "tag"),
        Index("ix_tags_resource", "resource_type", "resource_id"),
    )


class IdempotencyRow(Base):
    """The answer to a mutating request made with an ``Idempotency-Key`` (scoped to the user)."""

    __tablename__ = "idempotency_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    headers: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class TokenRow(Base):
    """A session token, stored as its SHA-256 (the token itself is shown to the client only)."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


from corral.server.db import tables_audit  # noqa: E402, F401  (registers AuditEventRow on Base)


class StoragePoolRow(Timestamped, Base):
    """A storage pool (``corral.api.storage``). ``settings``: the type's connection settings (no
    secrets); ``credentials_sealed``: the pool's credentials sealed with the master key
    (context ``storage_pool:<id>:credentials``), None when it has none."""

    __tablename__ = "storage_pools"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="enabled")
    settings: Mapped[dict[str, Any]] = mapped_column()
    credentials_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    overcommit: Mapped[float] = mapped_column(Float, default=1.0)
    total_gb: Mapped[float] = mapped_column(Float, default=0)
    used_gb: Mapped[float] = mapped_column(Float, default=0)
    allocated_gb: Mapped[float] = mapped_column(Float, default=0)
    luns: Mapped[list[Any] | None] = mapped_column(nullable=True)
    """iscsi: the target's LUNs as ``[number, bytes]`` pairs, as its hosts last reported them."""


class StoragePoolClusterRow(Base):
    """A cluster attached to a storage pool (removed with either)."""

    __tablename__ = "storage_pool_clusters"
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("storage_pools.id", ondelete="CASCADE"), primary_key=True
    )
    cluster_id: Mapped[str] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class StoragePoolHostRow(Base):
    """What one host last reported of one pool it uses (``PoolReport``): written when its agent
    answers a ``pools.sync`` or a heartbeat carries new reports, removed with the pool, the host,
    or when the host no longer uses the pool."""

    __tablename__ = "storage_pool_hosts"
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("storage_pools.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    total_gb: Mapped[float] = mapped_column(Float, default=0)
    free_gb: Mapped[float] = mapped_column(Float, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VolumeRow(Timestamped, Owned, Base):
    """A data volume (``corral.api.volumes``). ``pool_name`` is its active file (or image) on the
    pool: set at creation, replaced by a new overlay at each snapshot and revert; ``host_id`` is set when a volume of a ``local`` pool is
    instantiated (it lives on that host). Names are unique within a project."""

    __tablename__ = "volumes"
    name: Mapped[str] = mapped_column(String(63), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="available")
    size_gb: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16), default="qcow2")
    pool_id: Mapped[str] = mapped_column(ForeignKey("storage_pools.id"), index=True)
    pool_name: Mapped[str] = mapped_column(String(128))
    base_image_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The image whose copy on the pool this volume is made on (local, nfs: an overlay; rbd: a
    clone); kept after the image is deleted, so the copy goes only with its last volume."""
    parent_snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """rbd: the snapshot (of another volume) this volume is a Ceph copy-on-write clone of."""
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id"), nullable=True, index=True)
    instantiated: Mapped[bool] = mapped_column(Boolean, default=False)
    shareable: Mapped[bool] = mapped_column(Boolean, default=False)
    role: Mapped[str] = mapped_column(String(8), default="data", server_default="data")
    """``data``, or ``root``: a VM's root disk (``vda``), made and deleted with its VM."""
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True)
    """The image the volume starts as a copy of (copied when it is created on its pool)."""
    qos: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    backing_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The backing file of the active file ``pool_name`` (a snapshot's file; None: none)."""
    current_snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The snapshot the active file descends from (the tree's "you are here")."""
    snapshot_every_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    snapshot_keep: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_auto_snapshot_at: Mapped[dt.datetime | None] = mapped_column(nullable=True, index=True)
    """When the scheduler takes the next automatic snapshot (None: no schedule)."""

    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_volumes_project_name"),
        UniqueConstraint("pool_id", "pool_name", name="uq_volumes_pool_file"),
    )


class VolumeAttachmentRow(Base):
    """A volume attached to a VM as disk ``device``. One device name per VM."""

    __tablename__ = "volume_attachments"
    volume_id: Mapped[str] = mapped_column(
        ForeignKey("volumes.id", ondelete="CASCADE"), primary_key=True
    )
    vm_id: Mapped[str] = mapped_column(
        ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    device: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("vm_id", "device", name="uq_volume_attachments_device"),)


class SnapshotRow(Timestamped, Owned, Base):
    """A node of a volume's snapshot tree (``corral.api.snapshots``).

    ``file`` is the frozen qcow2 image on the volume's pool (the volume's active file when the
    snapshot was taken); ``backing`` is that file's backing file today (None: standalone), which
    merges change; ``parent_id`` is the logical parent in the tree, kept when files are merged.
    """

    __tablename__ = "snapshots"
    name: Mapped[str] = mapped_column(String(63), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    file: Mapped[str] = mapped_column(String(128))
    backing: Mapped[str | None] = mapped_column(String(128), nullable=True)
    size_gb: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="creating", index=True)
    kind: Mapped[str] = mapped_column(String(16), default="manual")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    vm_snapshot_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The whole-VM snapshot this node is part of (None: a snapshot of this volume alone)."""
    used_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """What the node's file (or Ceph snapshot) takes on the pool, measured when it was frozen
    and again when a merge rewrote it; None: not measured."""

    __table_args__ = (UniqueConstraint("volume_id", "name", name="uq_snapshots_volume_name"),)


class VmSnapshotRow(Timestamped, Owned, Base):
    """A whole-VM snapshot (``corral.api.vm_snapshots``): one ``SnapshotRow`` per volume of the
    VM taken at the same moment (``SnapshotRow.vm_snapshot_id``), and with ``memory`` the VM's
    memory state in a file on ``memory_host_id`` (agent's ``<data>/memory/<id>.mem``)."""

    __tablename__ = "vm_snapshots"
    name: Mapped[str] = mapped_column(String(63), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="creating", index=True)
    memory: Mapped[bool] = mapped_column(Boolean, default=False)
    memory_host_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    quiesced: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (UniqueConstraint("vm_id", "name", name="uq_vm_snapshots_vm_name"),)


class RecycleBinRow(Base):
    """A deleted VM, volume or image kept in the recycle bin (``corral.api.recycle``). The
    resource's own row stays, with the status ``recycled`` and a name freed for reuse; ``name``
    is the one it had, ``previous_status`` the status a restore gives back."""

    __tablename__ = "recycle_bin"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(63))
    previous_status: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    owner_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    deleted_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    deleted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expunge_at: Mapped[dt.datetime | None] = mapped_column(nullable=True, index=True)


class DeletionPolicyRow(Base):
    """The deletion policy of one kind of resource (no row: the server's default)."""

    __tablename__ = "deletion_policies"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    policy: Mapped[str] = mapped_column(String(16))
    retention_s: Mapped[float] = mapped_column(Float)


class PoolImageCopyRow(Base):
    """A pool holds its own copy of an image (volumes from it are made on it). Removed, with
    the copy, once the image is deleted and no volume of the pool is made on it
    (``services.pool_images.sweep``)."""

    __tablename__ = "pool_image_copies"
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("storage_pools.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SwitchRow(Timestamped, Base):
    """A distributed switch (``corral.api.networks``): ``uplink`` is the host interface its hosts
    use unless ``SwitchUplinkRow`` names another for a host."""

    __tablename__ = "switches"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    uplink: Mapped[str] = mapped_column(String(15), default="eth0")
    mtu: Mapped[int] = mapped_column(Integer, default=1500)


class SwitchClusterRow(Base):
    """A cluster attached to a switch: its hosts carry the switch (removed with either)."""

    __tablename__ = "switch_clusters"
    switch_id: Mapped[str] = mapped_column(
        ForeignKey("switches.id", ondelete="CASCADE"), primary_key=True
    )
    cluster_id: Mapped[str] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SwitchUplinkRow(Base):
    """A host's own uplink interface for a switch (instead of the switch's default)."""

    __tablename__ = "switch_uplinks"
    switch_id: Mapped[str] = mapped_column(
        ForeignKey("switches.id", ondelete="CASCADE"), primary_key=True
    )
    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    interface: Mapped[str] = mapped_column(String(15))


class PortGroupRow(Timestamped, Base):
    """A port group: one L2 segment of a switch. ``segment_key`` makes the segment rules one
    unique constraint: ``<switch>:flat`` (one flat group per switch), ``<switch>:vlan:<id>``
    (a VLAN id once per switch), ``vxlan:<vni>`` (a VNI once in the platform)."""

    __tablename__ = "port_groups"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    switch_id: Mapped[str] = mapped_column(ForeignKey("switches.id"), index=True)
    type: Mapped[str] = mapped_column(String(8))
    segment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    segment_key: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class SubnetRow(Timestamped, Base):
    """A subnet (IP pool) of a port group. ``ranges``: ``[[start, end], ...]`` (canonical
    address strings); ``reserved`` and ``dns_servers``: address lists."""

    __tablename__ = "subnets"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    port_group_id: Mapped[str] = mapped_column(ForeignKey("port_groups.id"), index=True)
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dns_servers: Mapped[list[Any]] = mapped_column(default=list)
    ranges: Mapped[list[Any]] = mapped_column(default=list)
    reserved: Mapped[list[Any]] = mapped_column(default=list)
    dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")


class IpAllocationRow(Base):
    """An address of a subnet in use. The primary key makes a duplicate impossible, whatever
    races: an allocation that loses one retries with another address."""

    __tablename__ = "ip_allocations"
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    nic_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    vm_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    host_id: Mapped[str | None] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), nullable=True, index=True
    )
    """Set: the address of that host's DHCP server in the subnet."""
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SecurityGroupRow(Timestamped, Owned, Base):
    """A security group (``corral.api.security_groups``); its rules are
    ``SecurityGroupRuleRow``. ``revision`` grows with every rule change (the row update
    serializes concurrent changes of one group's rules)."""

    __tablename__ = "security_groups"
    name: Mapped[str] = mapped_column(String(63), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    intra_group: Mapped[bool] = mapped_column(Boolean, default=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        UniqueConstraint("project_id", "name", name="uq_security_groups_project_name"),
    )


class SecurityGroupRuleRow(Base):
    """A rule of a security group at ``priority`` (0 first, consecutive per group)."""

    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id", ondelete="CASCADE"), index=True
    )
    priority: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(8))
    ethertype: Mapped[str] = mapped_column(String(4))
    protocol: Mapped[str] = mapped_column(String(8))
    port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_cidr: Mapped[str | None] = mapped_column(String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_groups.id"), nullable=True, index=True
    )
    action: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        UniqueConstraint("group_id", "priority", name="uq_security_group_rules_priority"),
    )


class NicRow(Timestamped, Base):
    """A VM's network interface (``corral.api.nics``) on a port group, at ``position`` among the
    VM's NICs. Its addresses are ``IpAllocationRow``s (``nic_id``), its security groups
    ``NicSecurityGroupRow``s. ``allowed_pairs``: ``[[mac, cidr], ...]``."""

    __tablename__ = "nics"
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id"), index=True)
    port_group_id: Mapped[str] = mapped_column(ForeignKey("port_groups.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    model: Mapped[str] = mapped_column(String(16), default="virtio")
    ingress_default: Mapped[str] = mapped_column(String(8), default="deny")
    egress_default: Mapped[str] = mapped_column(String(8), default="allow")
    spoof_check: Mapped[bool] = mapped_column(Boolean, default=True)
    allowed_pairs: Mapped[list[Any]] = mapped_column(default=list)
    inbound_kbps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outbound_kbps: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (UniqueConstraint("vm_id", "position", name="uq_nics_vm_position"),)


class NicSecurityGroupRow(Base):
    """A security group on a NIC, at ``position`` (0 is evaluated first)."""

    __tablename__ = "nic_security_groups"
    nic_id: Mapped[str] = mapped_column(ForeignKey("nics.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("security_groups.id"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)


class HostSlotRow(Base):
    """A host-local number held by an owner: ``kind`` ``tag`` — the local VLAN tag of a port
    group (owner) on the host's integration bridge; ``zone`` — the conntrack zone (also the
    flows' cookie) of a NIC (owner) on the host. The primary key makes a number unique per host
    and kind, the unique constraint gives an owner one number per host and kind."""

    __tablename__ = "host_slots"
    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(32), index=True)

    __table_args__ = (UniqueConstraint("host_id", "kind", "owner_id", name="uq_host_slots_owner"),)
