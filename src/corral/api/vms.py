"""Virtual machines."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from corral.api.common import Model, Name, OwnedResource, Ref


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


class VmCreate(Model):
    """Create a VM. Sizes come from ``offering`` unless given; explicit values win."""

    name: Name
    image: Ref = Field(description="image id or name")
    offering: Ref | None = Field(None, description="offering id or name")
    cpus: int | None = Field(None, ge=1, le=256)
    memory_mb: int | None = Field(None, ge=16, le=4 * 1024 * 1024)
    disk_gb: int | None = Field(None, ge=1, le=64 * 1024)
    host: Ref | None = Field(None, description="pin to a host (id or name)")
    start: bool = True

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
