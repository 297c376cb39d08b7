"""Images in the image store: the bases VM disks are created from."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from corral.api.common import Model, Name, OwnedResource, Ref


class ImageStatus(StrEnum):
    importing = "importing"
    ready = "ready"
    error = "error"
    recycled = "recycled"


class Image(OwnedResource):
    status: ImageStatus
    format: str | None = Field(
        None,
        description="qcow2, raw or iso (ISO 9660: boots from a VM's CD-ROM drive, never a VM's"
        " disk), detected on import",
    )
    size_bytes: int = 0
    virtual_size_bytes: int = 0
    sha256: str | None = None
    source_url: str | None = None
    source_type: Literal["vm", "volume", "snapshot"] | None = Field(
        None, description="what the image was captured from (None: uploaded or downloaded)"
    )
    source_id: str | None = Field(None, description="the id of the VM, volume or snapshot")
    host_id: str | None = Field(
        None,
        description="only in this host's image cache, not in the image store; VMs made from"
        " it run there: a linked-clone layer (parent_id set), or a full clone's base until it"
        " is published (parent_id null; then null)",
    )
    parent_id: str | None = Field(None, description="the image a layer is an overlay on")
    error: str | None = Field(
        None,
        description="why the last publish of a full clone's base failed (it stays on its"
        " host, usable there)",
    )


class ImageSource(Model):
    """What an image is captured from: exactly one of ``vm`` (its root disk; stopped, or
    running: copied live, a consistent copy of that moment), ``volume`` (its current data; detached, or its VMs stopped) or ``snapshot`` (the
    volume's data at that snapshot; any time, the VM may run). The disk's backing chain is
    flattened into one standalone qcow2 image."""

    vm: Ref | None = Field(None, description="VM id or name")
    volume: Ref | None = Field(None, description="volume id or name")
    snapshot: Ref | None = Field(None, description="snapshot id or name")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSource:
        given = [k for k in ("vm", "volume", "snapshot") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of vm, volume or snapshot")
        return self


class ImageCreate(Model):
    """Create an image record. With ``url`` the server downloads it, with ``source`` it is
    captured from a VM's disk, a volume or a snapshot (operations); with neither, upload the
    bytes with ``PUT /api/v1/images/{id}/data``."""

    name: Name
    url: str | None = Field(None, max_length=2048)
    source: ImageSource | None = None

    @model_validator(mode="after")
    def _one_origin(self) -> ImageCreate:
        if self.url is not None and self.source is not None:
            raise ValueError("give url or source, not both")
        return self
