"""Images in the image store: the bases VM disks are created from."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from corral.api.common import Model, Name, OwnedResource


class ImageStatus(StrEnum):
    importing = "importing"
    ready = "ready"
    error = "error"


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


class ImageCreate(Model):
    """Create an image record. With ``url`` the server downloads it (an operation); without, upload
    the bytes with ``PUT /api/v1/images/{id}/data``."""

    name: Name
    url: str | None = Field(None, max_length=2048)
