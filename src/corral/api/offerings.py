"""Instance offerings: named CPU/memory/disk presets."""

from __future__ import annotations

from pydantic import Field

from corral.api.common import Model, Name, Resource


class Offering(Resource):
    cpus: int
    memory_mb: int
    disk_gb: int


class OfferingCreate(Model):
    name: Name
    cpus: int = Field(ge=1, le=256)
    memory_mb: int = Field(ge=16, le=4 * 1024 * 1024)
    disk_gb: int = Field(ge=1, le=64 * 1024)
