"""Data volumes: disks of their own, on a storage pool, attached to at most one VM at a time
(several when ``shareable``).

A volume is *instantiated* lazily: creating one only records it (``host_id`` None, nothing on any
host); its first attach creates it on the pool, from the VM's host. On a ``local`` pool the volume
then lives on that host (``host_id``) and can only be attached to VMs on it; on shared pools
(nfs, iscsi, rbd) every host of the pool's clusters reaches it.

Sizes are GiB (2^30 bytes). Volumes only grow (``resize``); a running VM sees the new size at
once. ``qos`` limits the disk's I/O (libvirt ``iotune``): 0 or absent means unlimited.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from corral.api.common import Model, Name, OwnedResource, Ref

MAX_VOLUME_GB = 64 * 1024
MAX_DATA_VOLUMES = 24
"""Most data volumes on one VM (virtio disks ``vdb`` … ``vdy``)."""


class VolumeRole(StrEnum):
    """``data``: a data volume (attached and detached at will); ``root``: a VM's root disk
    (``vda``), made with the VM from its image and deleted with it: it cannot be detached,
    moved or deleted on its own."""

    data = "data"
    root = "root"


class VolumeStatus(StrEnum):
    """``available``: not attached; ``in_use``: attached to a VM (``attachments``); the ``-ing`` states while
    an operation runs; ``error``: an operation failed and could not be undone (``error`` says
    why; deleting the volume cleans up)."""

    available = "available"
    attaching = "attaching"
    in_use = "in_use"
    detaching = "detaching"
    resizing = "resizing"
    snapshotting = "snapshotting"
    reverting = "reverting"
    capturing = "capturing"
    moving = "moving"
    cloning = "cloning"
    deleting = "deleting"
    recycled = "recycled"
    error = "error"


class VolumeQos(Model):
    """I/O limits of a volume (per second; 0 = unlimited). ``total_*`` and the read/write pair
    of the same unit are exclusive (libvirt refuses both)."""

    total_iops_sec: int = Field(0, ge=0, le=10**9)
    read_iops_sec: int = Field(0, ge=0, le=10**9)
    write_iops_sec: int = Field(0, ge=0, le=10**9)
    total_bytes_sec: int = Field(0, ge=0, le=10**13)
    read_bytes_sec: int = Field(0, ge=0, le=10**13)
    write_bytes_sec: int = Field(0, ge=0, le=10**13)

    @model_validator(mode="after")
    def _exclusive(self) -> VolumeQos:
        if self.total_iops_sec and (self.read_iops_sec or self.write_iops_sec):
            raise ValueError("total_iops_sec excludes read_iops_sec and write_iops_sec")
        if self.total_bytes_sec and (self.read_bytes_sec or self.write_bytes_sec):
            raise ValueError("total_bytes_sec excludes read_bytes_sec and write_bytes_sec")
        return self

    @property
    def unlimited(self) -> bool:
        return not any(self.model_dump().values())


class SnapshotSchedule(Model):
    """Automatic snapshots every ``every_minutes``; the newest ``keep`` automatic ones are kept
    (older ones are deleted by merging). Manual snapshots are never deleted by the schedule: when
    the chain is full of them, the automatic snapshot is skipped."""

    every_minutes: int = Field(ge=1, le=366 * 24 * 60)
    keep: int = Field(ge=1, le=128)


class VolumeAttachment(Model):
    vm_id: str
    device: str = Field(description="the disk's name in the VM (vdb …)")


class Volume(OwnedResource):
    status: VolumeStatus
    size_gb: int
    format: str = Field(description="qcow2 (file pools) or raw (iscsi, rbd)")
    pool_id: str
    host_id: str | None = Field(None, description="where it lives, for a local pool")
    instantiated: bool = Field(description="whether it exists on its pool yet (first attach)")
    attachments: list[VolumeAttachment] = Field(
        default_factory=list, description="the VMs using it (several only when shareable)"
    )
    shareable: bool = Field(False, description="may be attached to several VMs at once")
    role: VolumeRole = VolumeRole.data
    image_id: str | None = Field(None, description="the image it started as a copy of")
    parent_snapshot_id: str | None = Field(
        None, description="rbd: the snapshot this volume is a copy-on-write clone of"
    )
    qos: VolumeQos = Field(default_factory=VolumeQos)
    snapshot_schedule: SnapshotSchedule | None = None
    snapshots_bytes: int | None = Field(
        None,
        description="bytes the volume's snapshots take on the pool: the sum of their used_bytes"
        " (those measured); None when none is measured",
    )
    error: str | None = None


class VolumeCreate(Model):
    """Record a data volume on ``pool`` (created on the pool at its first attach), blank or a
    copy of ``image``; or made at once from ``snapshot`` (on the snapshot's pool: a full copy of
    its data on file pools, a Ceph copy-on-write clone on rbd, which keeps the snapshot while
    it exists: ``parent_snapshot_id``)."""

    name: Name
    size_gb: int = Field(ge=1, le=MAX_VOLUME_GB)
    pool: Ref = Field(description="storage pool id or name")
    image: Ref | None = Field(
        None, description="start as a copy of this disk image (id or name; not an ISO)"
    )
    snapshot: Ref | None = Field(
        None, description="start as a copy (rbd: a clone) of this snapshot (id or name)"
    )
    shareable: bool = False
    qos: VolumeQos | None = None
    vm: Ref | None = Field(None, description="attach to this VM at once (id or name)")

    @model_validator(mode="after")
    def _one_source(self) -> VolumeCreate:
        if self.snapshot is not None and (self.image is not None or self.vm is not None):
            raise ValueError("a volume from a snapshot takes no image and no vm (attach it after)")
        return self


class VolumeUpdate(Model):
    """Rename a volume, change its I/O limits (applied live when it is attached) or its snapshot
    schedule (``null`` removes it)."""

    name: Name | None = None
    qos: VolumeQos | None = None
    snapshot_schedule: SnapshotSchedule | None = None


class VolumeAttach(Model):
    vm: Ref = Field(description="VM id or name")


class VolumeMove(Model):
    """Move a detached volume to another pool (its data copied, then the old copy deleted).
    The volume keeps its id, name and size; it must have no snapshots."""

    pool: Ref = Field(description="the pool to move it to (id or name)")


class VolumeResize(Model):
    size_gb: int = Field(ge=1, le=MAX_VOLUME_GB, description="the new size; volumes only grow")
