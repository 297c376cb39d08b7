"""The compute driver interface every hypervisor backend implements.

Contract shared by all methods:
- They are idempotent: asking for the state a VM is already in succeeds without doing anything
  (``start`` on a running VM, ``undefine`` on an absent VM).
- They raise only ``corral.api.errors`` errors: ``NotFound`` for an unknown VM where presence is
  required, ``InvalidState`` when the transition is impossible (``pause`` a stopped VM),
  ``DriverError`` for hypervisor failures. Foreign exceptions are translated at the driver boundary.
- On failure they leave nothing behind that they created in the same call.
- ``vm_id`` is Corral's VM id; how the hypervisor names the VM is the driver's business.
- Data volumes are identified by their volume id; a VM has each volume at most once. "Live"
  means the hypervisor runs the VM (running or paused); the persistent definition is always
  changed too, so a stopped and started VM keeps what was attached. NICs likewise, by NIC id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral.agent.storage.backend import DiskSource
from corral.api.agent import DataDisk, NicSpec, VmEvent, VmSpec
from corral.api.hosts import HostFacts
from corral.api.vms import PowerState
from corral.api.volumes import VolumeQos

EventSink = Callable[[VmEvent], None]
"""Called (from the event loop thread) whenever a VM's power state changes."""


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do, read by the server when it places and operates VMs."""

    name: str
    live_resize: bool = False
    pause: bool = True
    graceful_shutdown: bool = True


class ComputeDriver(Protocol):
    """Runs VMs on one host."""

    capabilities: Capabilities

    async def open(self, events: EventSink) -> None:
        """Connect to the hypervisor and start delivering lifecycle events to ``events``."""

    async def close(self) -> None:
        """Release connections and threads. Running VMs keep running."""

    async def facts(self) -> HostFacts:
        """Describe the host: CPU, memory, disk, hypervisor, whether KVM is usable."""

    async def define(
        self,
        spec: VmSpec,
        disk_path: str | None,
        disks: Sequence[tuple[DataDisk, DiskSource]] = (),
        cdrom: str | None = None,
    ) -> None:
        """Define the VM (persistently) or replace its definition: root disk ``disk_path`` (None:
        the root is the data disk ``vda`` of ``disks``, a volume), then
        the data ``disks`` in order, each with how to reach it (``spec.disks`` is not read), and
        a CD-ROM drive holding the ISO file ``cdrom`` (None: empty), then, if
        ``spec.config_drive`` is set, a second, read-only CD-ROM drive with that NoCloud config
        drive (made by the driver from the spec at every define, gone when a define without it
        or ``undefine`` follows; never in the boot order), then the NICs of
        ``spec.nics``, booting in ``spec.boot`` order. The VM must be stopped to change CPUs or
        memory (``InvalidState`` otherwise, unless ``live_resize``); a running VM gets a
        changed disk or NIC list at its next start (hot-plug: ``attach_*``/``detach_*``)."""

    async def set_cdrom(self, vm_id: str, path: str | None) -> None:
        """Put the ISO file ``path`` in the VM's CD-ROM drive, or eject the medium (None): live
        if the VM is live (a forced eject: the guest cannot hold the tray shut), and in the
        definition. Already so is success. ``NotFound`` if the VM is not defined,
        ``InvalidState`` if a live VM has no CD-ROM drive (defined before drives existed: it
        gets one at its next start)."""

    async def undefine(self, vm_id: str) -> None:
        """Power the VM off if needed and remove its definition. Absent is success."""

    async def start(self, vm_id: str) -> None:
        """Boot a stopped VM. Running is success; paused raises ``InvalidState``."""

    async def stop(self, vm_id: str, *, force: bool, timeout: float) -> None:
        """Shut the VM down: ACPI shutdown waiting up to ``timeout`` seconds then power off, or
        power off at once with ``force``. Stopped is success."""

    async def reboot(self, vm_id: str) -> None:
        """Reboot a running VM (ACPI, falling back to reset)."""

    async def pause(self, vm_id: str) -> None:
        """Suspend a running VM's vCPUs. Paused is success."""

    async def resume(self, vm_id: str) -> None:
        """Resume a paused VM. Running is success."""

    async def power_state(self, vm_id: str) -> PowerState:
        """The VM's state now; ``absent`` if it is not defined."""

    async def list_vms(self) -> dict[str, PowerState]:
        """Every Corral VM defined on this host, by vm id."""

    async def describe(self, vm_id: str) -> dict[str, object]:
        """What the hypervisor has for the VM (cpus, memory_mb, disk_path of the root disk,
        volumes: the sorted ids of its data volumes, vnc port; drivers that report NICs: nics,
        the sorted ids of its NICs; drivers that report config drives: config_drive, whether it
        has one), for drift detection. ``NotFound`` if absent."""

    async def attach_disk(self, vm_id: str, disk: DataDisk, source: DiskSource) -> None:
        """Add the data volume to the VM's definition as ``disk.device`` and hot-plug it if the
        VM is live. Attached (same volume) is success. ``NotFound`` if the VM is not defined,
        ``InvalidState`` if another disk holds the device, ``InvalidInput`` for a disk the
        hypervisor cannot use (a shareable disk must be raw)."""

    async def detach_disk(self, vm_id: str, volume_id: str, timeout: float) -> None:
        """Hot-unplug the volume if the VM is live, waiting up to ``timeout`` s for the guest to
        release it, then remove it from the definition. ``InvalidState`` ("the guest did not
        release the disk") if it does not, with the definition left as it was. Not attached,
        or the VM not defined, is success."""

    async def attach_nic(self, vm_id: str, nic: NicSpec) -> None:
        """Add the NIC (a tap ``nic.port`` on the Open vSwitch bridge ``nic.bridge``, VLAN
        ``nic.tag``) to the VM's definition and hot-plug it if the VM is live. Attached (same
        NIC id) is success, whatever its settings (the caller compares them). ``NotFound`` if
        the VM is not defined, ``InvalidState`` if another NIC of the VM has its MAC or port,
        ``DriverError`` if the hypervisor or the switch refuses (nothing is left plugged)."""

    async def detach_nic(self, vm_id: str, nic_id: str, timeout: float) -> None:
        """Hot-unplug the NIC if the VM is live, waiting up to ``timeout`` s for the guest to
        release it, then remove it from the definition. ``InvalidState`` ("the guest did not
        release the NIC") if it does not, with the definition left as it was. Not attached,
        or the VM not defined, is success."""

    async def resize_disk(self, vm_id: str, volume_id: str, size_bytes: int) -> None:
        """Grow the attached volume of a live VM to ``size_bytes`` (the guest sees it at once);
        that size or larger is success. ``InvalidState`` if the VM is not live (grow the volume
        on its pool instead), ``NotFound`` if the VM or the disk is not there."""

    async def set_disk_qos(self, vm_id: str, volume_id: str, qos: VolumeQos) -> None:
        """Replace the attached volume's I/O limits (live if the VM is live, and in the
        definition); all-zero ``qos`` lifts them. ``NotFound`` if the VM or disk is not there."""

    async def snapshot_disk(
        self, vm_id: str, volume_id: str, new_source: DiskSource, quiesce: bool
    ) -> None:
        """Live external snapshot of one attached data volume: the live VM continues on
        ``new_source``, an existing empty qcow2 overlay whose backing is the disk's current file
        (made beforehand by the pool's backend: ``create_overlay``), and the persistent
        definition follows. The other disks are left alone. ``quiesce``: the guest's file
        systems are frozen around the switch through the guest agent (``DriverError`` if it
        does not answer). Already on ``new_source`` is success. ``InvalidState`` unless the VM
        is live (a stopped VM is redefined on the new file instead), ``NotFound`` if the VM or
        the disk is not there, ``InvalidInput`` for a source the driver cannot switch to. The
        switch is atomic: after a failure the VM runs on its old file unless ``disk_file``
        says otherwise."""

    async def disk_file(self, vm_id: str, volume_id: str) -> str | None:
        """The file the VM has the data volume on now (live while it runs, else in its
        definition): ``DiskSource.path`` of a file disk, ``DiskSource.name`` of a network one.
        None if the VM does not have the volume, ``NotFound`` if the VM is not defined."""

    async def copy_root(self, vm_id: str, dest: Path) -> None:
        """A point-in-time, standalone qcow2 copy of the live VM's root disk (its backing chain
        flattened) at ``dest`` (absent; its directory exists), made while the guest runs (a
        full block copy, stopped without switching the VM to it). ``InvalidState`` unless the
        VM runs; ``DriverError`` if the copy fails (``dest`` is then removed)."""

    async def flatten_root(self, vm_id: str) -> None:
        """Copy into the live VM's root disk everything its backing chain holds (a block pull
        onto nothing), so it stands alone; returns when done. Standalone already is success.
        ``InvalidState`` unless the VM runs, ``DriverError`` if the copy fails or does not
        finish in time (it is cancelled)."""

    async def block_pull(self, vm_id: str, volume_id: str, base: DiskSource | None) -> None:
        """Copy into the live VM's active file of the volume what the files between it and
        ``base`` hold, so that it is backed by ``base`` directly (None: by nothing, standalone);
        returns when the copy is complete (the files in between are no longer open). Already
        backed by ``base`` is success. ``InvalidState`` unless the VM is live, ``NotFound`` if
        the VM or the disk is not there, ``InvalidInput`` if ``base`` is not under the active
        file, ``DriverError`` if the copy fails or does not finish in time (it is cancelled)."""

    # --- whole-VM snapshots (see ``corral.agent.vm_snapshots``) -------------------------------

    async def fs_freeze(self, vm_id: str, timeout: float) -> bool:
        """Freeze the running guest's file systems through its guest agent, waiting at most
        about ``timeout`` seconds for an answer. True if they are frozen; False if the agent is
        absent, does not answer in time or refuses (the caller goes on unquiesced, and must
        call ``fs_thaw`` all the same: a late answer may still freeze them). ``NotFound`` if
        the VM is not defined."""

    async def fs_thaw(self, vm_id: str, timeout: float) -> None:
        """Thaw the guest's file systems (not frozen is success), waiting at most about
        ``timeout`` seconds. ``DriverError`` if the guest agent does not answer."""

    async def snapshot_vm(
        self, vm_id: str, disks: Mapping[str, DiskSource], memory: Path | None
    ) -> None:
        """One external snapshot of the live VM: every data volume of ``disks`` (by volume id)
        continues on its new source, an existing empty qcow2 overlay of the disk's current file
        (``snapshot_disk``'s contract, file sources only: ``InvalidInput`` otherwise), all at
        the same instant, and with ``memory`` the VM's memory state is saved to that file (the
        state a ``restore_vm`` starts from; the file is replaced if it exists). Every other
        disk (root disk, other volumes, CD-ROM) is left alone. The VM ends in the power state
        it had (the caller pauses it first to take other snapshots at the same instant); the
        persistent definition follows the switched disks. All or nothing: after a failure no
        disk is switched and ``memory`` does not exist. Every disk already on its new source is
        success (nothing is taken again); some of them only is ``InvalidState``, as is a VM
        that is not live. ``NotFound`` if the VM or a disk is not there."""

    async def restore_vm(self, vm_id: str, memory: Path) -> None:
        """Start the stopped VM from the memory state file ``memory`` (written by
        ``snapshot_vm``) on the disk files of its current persistent definition (they may have
        changed since: they must hold what the disks held when the memory was saved), with the
        devices it had then (the persistent definition is left as it is). The VM runs
        afterwards. Running is success; paused is ``InvalidState``, and so is a VM whose disks
        are not those of the memory state (one gone, a volume attached since); ``NotFound`` if
        the VM is not defined; ``DriverError`` if the hypervisor cannot restore the file."""
