"""The simulated host's configuration and the state it keeps per VM."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.agent.storage.backend import DiskSource
from corral.api.agent import DataDisk, NicSpec, VmSpec
from corral.api.vms import PowerState

GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class SimHost:
    """A simulated machine.

    Capacity guard: ``define`` refuses when the vCPUs or memory of all defined VMs would exceed
    ``cpus * cpu_overcommit`` or ``memory_mb * memory_overcommit`` (``cpu_overcommit=None``: vCPUs
    unbounded), and ``start`` refuses when the memory of running VMs would exceed ``memory_mb``
    (a real host cannot run more than its RAM). Set the overcommit ratios to the server's so a
    correct server is never refused. With ``enforce=False`` the claim is accepted but still
    recorded in ``SimulatorDriver.overcommitted_ever``.
    """

    name: str
    cpu_model: str = "Corral Simulated CPU"
    cpus: int = 16
    memory_mb: int = 65536
    disk_gb: float = 1000.0
    cpu_overcommit: float | None = None
    memory_overcommit: float = 1.0
    enforce: bool = True


@dataclass(frozen=True)
class SimLatencies:
    """Seconds each operation takes (``asyncio.sleep`` after the fault check); 0 = instant."""

    define: float = 0.0
    undefine: float = 0.0
    start: float = 0.0
    stop: float = 0.0
    reboot: float = 0.0
    pause: float = 0.0
    resume: float = 0.0
    disk_create: float = 0.0
    disk_delete: float = 0.0
    attach_disk: float = 0.0
    detach_disk: float = 0.0
    resize_disk: float = 0.0
    set_disk_qos: float = 0.0
    snapshot_disk: float = 0.0
    block_pull: float = 0.0
    snapshot_vm: float = 0.0
    restore_vm: float = 0.0
    attach_nic: float = 0.0
    detach_nic: float = 0.0


_ACTIVE = frozenset({PowerState.running, PowerState.paused})


@dataclass(slots=True)
class SimDisk:
    """A data volume in a simulated VM: as attached (``disk``, whose ``qos`` is kept current),
    where it comes from (``source``: its active file), the size the guest sees, whether the
    guest refuses to release it (``held``: a hot-unplug then times out), and the files under
    the active one that live snapshots made (``chain``, nearest first)."""

    disk: DataDisk
    source: DiskSource
    size_bytes: int
    held: bool = False
    chain: list[DiskSource] = field(default_factory=list)

    @staticmethod
    def of(disk: DataDisk, source: DiskSource) -> SimDisk:
        return SimDisk(disk=disk, source=source, size_bytes=disk.volume.size_gb * GIB)


@dataclass(slots=True)
class SimVm:
    """One simulated VM: its definition and what the "hypervisor" shows for it."""

    spec: VmSpec
    disk_path: str | None
    cpus: int
    memory_mb: int
    state: PowerState = PowerState.stopped
    vnc_port: int | None = None
    acpi: bool = True
    boots: int = 0
    disks: dict[str, SimDisk] = field(default_factory=dict)
    """Data volumes by volume id, in device order of attachment."""
    cdrom: str | None = None
    """The ISO file in the CD-ROM drive (None: empty)."""
    guest_agent: bool = True
    """Whether the guest agent answers (file system freezes and thaws)."""
    frozen: bool = False
    """Whether the guest's file systems are frozen through the guest agent."""
    nics: dict[str, NicSpec] = field(default_factory=dict)
    """NICs by NIC id, in order of definition and attachment."""
    held_nics: set[str] = field(default_factory=set)
    """NICs whose guest refuses hot-unplugs (a detach then times out)."""

    @property
    def active(self) -> bool:
        """Running or paused: the VM holds its memory."""
        return self.state in _ACTIVE


@dataclass(frozen=True)
class SimUsage:
    """What the simulated host's VMs claim; "running" counts running and paused VMs."""

    vms: int
    vms_running: int
    cpus_defined: int
    memory_mb_defined: int
    memory_mb_running: int
    disk_gb_defined: int
