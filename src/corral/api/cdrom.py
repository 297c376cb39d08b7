"""A VM's CD-ROM drive and boot order: insert or eject an ISO image, choose what boots first."""

from __future__ import annotations

from pydantic import Field, field_validator

from corral.api.agent import BootDevice
from corral.api.common import Model, Ref


class CdromInsert(Model):
    """Put an ISO image (ready, seen by the caller) in the VM's CD-ROM drive; live if it runs."""

    image: Ref = Field(description="ISO image id or name")


class BootOrder(Model):
    """The devices the VM boots from, in order; applies at its next boot."""

    boot: list[BootDevice] = Field(min_length=1, max_length=2, examples=[["cdrom", "hd"]])

    @field_validator("boot")
    @classmethod
    def _distinct(cls, boot: list[BootDevice]) -> list[BootDevice]:
        if len(set(boot)) != len(boot):
            raise ValueError("each boot device at most once")
        return boot
