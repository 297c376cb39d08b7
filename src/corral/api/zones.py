"""Zones (data centers) and clusters (groups of alike hosts)."""

from __future__ import annotations

from pydantic import Field

from corral.api.common import Model, Name, Ref, Resource


class Zone(Resource):
    description: str = ""


class ZoneCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)


class Cluster(Resource):
    zone_id: str
    description: str = ""
    cpu_overcommit: float = Field(description="vCPUs allowed per physical CPU thread")
    memory_overcommit: float = Field(description="VM memory allowed per byte of host memory")


class ClusterCreate(Model):
    name: Name
    zone: Ref = Field(description="zone id or name")
    description: str = Field("", max_length=1024)
    cpu_overcommit: float = Field(4.0, gt=0, le=64)
    memory_overcommit: float = Field(1.0, gt=0, le=4)


class ClusterUpdate(Model):
    description: str | None = Field(None, max_length=1024)
    cpu_overcommit: float | None = Field(None, gt=0, le=64)
    memory_overcommit: float | None = Field(None, gt=0, le=4)
