"""Virtual machines."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from corral.api.common import Model, Name, OwnedResource, Ref
from corral.api.nics import MAX_NICS, NicCreate
from corral.api.volumes import MAX_DATA_VOLUMES, MAX_VOLUME_GB


class VmStatus(StrEnum):
    creating = "creating"
    stopped = "stopped"
    starting = "starting"
    running = "running"
    stopping = "stopping"
    paused = "paused"
    rebooting = "rebooting"
    resizing = "resizing"
    deleting = "deleting"
    recycled = "recycled"
    error = "error"
    unknown = "unknown"


class PowerState(StrEnum):
    """What the hypervisor says, as opposed to what Corral is doing (``VmStatus``)."""

    running = "running"
    paused = "paused"
    stopped = "stopped"
    crashed = "crashed"
    absent = "absent"
    unknown = "unknown"


class VmAction(StrEnum):
    start = "start"
    stop = "stop"
    reboot = "reboot"
    pause = "pause"
    resume = "resume"


class Vm(OwnedResource):
    status: VmStatus
    power_state: PowerState
    cpus: int
    memory_mb: int
    disk_gb: int
    image_id: str | None
    offering_id: str | None = None
    host_id: str | None
    error: str | None = Field(None, description="why the VM is in error, if it is")
    cdrom_image_id: str | None = Field(None, description="the ISO image in the CD-ROM drive")
    boot_order: list[str] = Field(
        default_factory=lambda: ["hd"], description='boot devices in order: "cdrom", "hd"'
    )
    root_volume_id: str | None = Field(
        None, description="the root volume (on a storage pool); None: a host-local root disk"
    )


class VmVolume(Model):
    """A data volume made with the VM (blank or a copy of ``image``) and attached to it (``vdb``,
    ``vdc``… in order).
    It stays when the VM is deleted (detached), like any volume."""

    size_gb: int = Field(ge=1, le=MAX_VOLUME_GB)
    pool: Ref = Field(description="storage pool id or name")
    name: Name | None = Field(None, description="default: <vm name>-data<N>")
    image: Ref | None = Field(None, description="start as a copy of this disk image (not an ISO)")


class VmCreate(Model):
    """Create a VM. Sizes come from ``offering`` unless given; explicit values win. The VM is
    placed only on a host that reaches the storage pools of its ``volumes`` and ``root_pool``."""

    name: Name
    image: Ref = Field(description="image id or name")
    offering: Ref | None = Field(None, description="offering id or name")
    cpus: int | None = Field(None, ge=1, le=256)
    memory_mb: int | None = Field(None, ge=16, le=4 * 1024 * 1024)
    disk_gb: int | None = Field(None, ge=1, le=64 * 1024)
    host: Ref | None = Field(None, description="pin to a host (id or name)")
    start: bool = True
    volumes: list[VmVolume] = Field(default_factory=list, max_length=MAX_DATA_VOLUMES)
    root_pool: Ref | None = Field(
        None,
        description="put the root disk on this storage pool as the VM's root volume "
        "(<name>-root, made from the image, deleted with the VM; snapshots, whole-VM "
        "snapshots); None: a host-local root disk in the host agent's data directory",
    )

    nics: list[NicCreate] = Field(
        default_factory=list,
        max_length=MAX_NICS,
        description="network interfaces, in order (addresses allocated with the VM; the VM is "
        "placed on a host that carries their port groups' switches)",
    )

    @model_validator(mode="after")
    def _sizes_or_offering(self) -> VmCreate:
        if self.offering is None and (self.cpus is None or self.memory_mb is None):
            raise ValueError("give cpus and memory_mb, or an offering")
        return self


class VmResize(Model):
    """Change CPUs/memory of a stopped VM."""

    cpus: int | None = Field(None, ge=1, le=256)
    memory_mb: int | None = Field(None, ge=16, le=4 * 1024 * 1024)


class VmStop(Model):
    force: bool = Field(False, description="power off at once instead of an ACPI shutdown")
    timeout: float = Field(60.0, ge=0, le=3600, description="seconds to wait before forcing")


MAX_CLONES = 50


class VmClone(Model):
    """Clone a VM (stopped; a full clone also of a running one, its disk copied live). Each
    clone gets its own id, name, VNC password and (later) MAC
    addresses, and the source's CPUs, memory and disk size; data volumes are not cloned.
    ``count`` > 1 names the clones ``<name>-1`` … ``<name>-<count>``. The clones' base is the
    image ``<name>-base``:

    - ``full``: the source's root disk captured into the image store once (``source_type``
      ``vm``); every clone is a copy-on-write overlay on that image's copy in a host's image
      cache — independent of the source, placed on any host.
    - ``linked``: the source's disk frozen in constant time whatever its size into a layer kept
      in its host's image cache (``host_id`` set; the source goes on in a new overlay of it);
      the clones are overlays on the layer, on that host.
    - ``instant``: a linked clone (usable at once) whose disk then gets the layer's data copied
      in (a live block pull while it runs), after which it depends on no image.

    Linked and instant clones are of host-local root disks; a VM whose root is a volume is
    cloned ``full`` (its clones' root volumes are made on the pool from the captured base).
    """

    name: Name
    mode: Literal["full", "linked", "instant"] = "full"
    count: int = Field(1, ge=1, le=MAX_CLONES)
    start: bool = True
    host: Ref | None = Field(
        None, description="pin the clones to a host (id or name; full clones only)"
    )
    pool: Ref | None = Field(
        None,
        description="full clones: put each clone's root volume on this storage pool (default: "
        "the source's root volume's pool; a source with a host-local root disk gives clones "
        "host-local root disks)",
    )
