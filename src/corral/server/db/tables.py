"""The tables. They are not the contract: services turn rows into ``corral.api`` models."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from corral.server.db.types import UTCDateTime, new_id, utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class Timestamped:
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    can never oversubscribe a host.
    """

    __tablename__ = "hosts"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id"), index=True)
    url: Mapped[str] = mapped_column(String(512))
    token: Mapped[str] = mapped_column(String(128))
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


class ImageRow(Timestamped, Base):
    __tablename__ = "images"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="importing")
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    virtual_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)


class OfferingRow(Timestamped, Base):
    __tablename__ = "offerings"
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)


class VmRow(Timestamped, Base):
    """A VM. ``claimed`` says whether its cpus/memory/disk are counted in its host's ``*_used``."""

    __tablename__ = "vms"
    name: Mapped[str] = mapped_column(String(63), unique=True)
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
    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class TokenRow(Base):
    """A session token, stored as its SHA-256 (the token itself is shown to the client only)."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[dt.datetime] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
