"""The data-volume tasks of the agent: pool operations through the backends, VM operations
through the compute driver, and the VM's stored spec kept in step.

Ordering rules (as for ``vm.define``, see ``executor``): the driver changes the VM first, then
the spec file is written, so a spec only lists disks the hypervisor accepted. If the spec write
fails, the driver change is undone (attach -> detach, detach -> attach again, qos -> old limits)
and the task fails. A live grow cannot be undone (volumes only grow) and is idempotent, so a
failed spec write after it just fails the task for a retry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from corral.agent.compute.driver import ComputeDriver
from corral.agent.spec_changes import clear_drift, undo_after_spec_failure
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.backend import DiskSource, ImageCache, check_fits
from corral.agent.storage.volumes import Backends
from corral.api.agent import DataDisk, ImageRef, VmSpec, VolumeRef
from corral.api.errors import CorralError, InvalidInput, InvalidState, NotFound
from corral.api.vms import PowerState
from corral.api.volumes import VolumeQos

log = logging.getLogger(__name__)

GIB = 1024**3
UNDO_DETACH_TIMEOUT = 30.0
"""Seconds the guest gets to release a disk whose attach is being undone."""
VOLUMES_KEY = "volumes"
"""The ``describe`` key of a VM's data volume ids; drift notes about them start with it."""

ImagePath = Callable[[ImageRef], Awaitable[Path]]
"""The cached, checked local copy of an image (fetched first if absent)."""

_VOLUME_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_LIVE = (PowerState.running, PowerState.paused)


def check_volume_id(volume_id: str) -> str:
    """Return ``volume_id`` if the agent can use it (libvirt device aliases take only
    ``[A-Za-z0-9_-]``), else raise ``InvalidInput``."""
    if not _VOLUME_ID.match(volume_id):
        raise InvalidInput("invalid volume id", volume_id=volume_id)
    return volume_id


def disk_sources(
    backends: Backends, disks: Iterable[DataDisk]
) -> list[tuple[DataDisk, DiskSource]]:
    """Each disk with how QEMU reaches it (no I/O). ``InvalidInput`` for a pool type this host
    has no backend for."""
    return [(disk, backends.for_pool(disk.volume.pool).source(disk.volume)) for disk in disks]


def _find(spec: VmSpec, volume_id: str) -> DataDisk | None:
    return next((d for d in spec.disks if d.volume.volume_id == volume_id), None)


def _with_disks(stored: StoredSpec, disks: list[DataDisk]) -> StoredSpec:
    return stored.model_copy(update={"spec": stored.spec.model_copy(update={"disks": disks})})


class VolumeTasks:
    """Runs ``volume.*`` tasks. The caller serializes tasks per VM (``vm_id``) or, for tasks
    without one, per volume, so a VM's spec is never written by two tasks at once."""

    def __init__(
        self,
        *,
        compute: ComputeDriver,
        backends: Backends,
        specs: SpecStore,
        drift: dict[str, list[str]],
        image_path: ImagePath | None = None,
    ) -> None:
        self.compute = compute
        self.image_path = image_path
        self.backends = backends
        self.specs = specs
        self.drift = drift

    def sources(self, disks: Iterable[DataDisk]) -> list[tuple[DataDisk, DiskSource]]:
        return disk_sources(self.backends, disks)

    async def create(self, volume: VolumeRef, image: ImageRef | None = None) -> None:
        """Create the volume on its pool (a copy of ``image`` if given, from the host's image
        cache); existing is success. ``InvalidInput`` for an ISO image, one larger than the
        volume, or when this agent has no image cache."""
        backend = self.backends.for_pool(volume.pool)
        if image is None:
            await backend.create(volume)
            return
        if image.format not in ("qcow2", "raw"):
            raise InvalidInput(
                f"image {image.id} is a {image.format} image: a volume can only start as a"
                " copy of a qcow2 or raw image",
                image_id=image.id,
                format=image.format,
                volume_id=volume.volume_id,
            )
        check_fits(volume, image.virtual_size_bytes)
        if self.image_path is None:
            raise InvalidInput("this agent cannot make volumes from images", image_id=image.id)
        source = await self.image_path(image)
        if isinstance(backend, ImageCache):  # the pool keeps the image once
            await backend.create_on_image(volume, image.id, source, image.format)
        else:
            await backend.create_from(volume, source, image.format)

    async def delete(self, volume: VolumeRef) -> None:
        """Delete the volume from its pool; absent is success. ``InvalidState`` (context
        ``vm_ids``) while a VM spec on this host lists it."""
        users = self.specs.users_of(volume.volume_id)
        if users:
            raise InvalidState(
                "the volume is attached to a VM on this host",
                volume_id=volume.volume_id,
                vm_ids=users,
            )
        await self.backends.for_pool(volume.pool).delete(volume)

    async def attach(self, vm_id: str, disk: DataDisk) -> None:
        """Plug the disk into the VM (``compute.attach_disk``), then list it in the stored spec.
        ``NotFound`` if this agent has no spec of the VM, ``InvalidState`` if the spec has the
        volume under another device or another volume on the device."""
        stored = self._stored(vm_id)
        volume_id = disk.volume.volume_id
        existing = _find(stored.spec, volume_id)
        if existing is not None and existing.device != disk.device:
            raise InvalidState(
                f"volume {volume_id} is already attached to VM {vm_id} as {existing.device}",
                vm_id=vm_id,
                volume_id=volume_id,
                device=existing.device,
            )
        for other in stored.spec.disks:
            if other.device == disk.device and other.volume.volume_id != volume_id:
                raise InvalidState(
                    f"device {disk.device} of VM {vm_id} is used by another volume",
                    vm_id=vm_id,
                    volume_id=volume_id,
                    device=disk.device,
                    used_by=other.volume.volume_id,
                )
        source = self.backends.for_pool(disk.volume.pool).source(disk.volume)
        await self.compute.attach_disk(vm_id, disk, source)
        if existing == disk:
            return
        disks = [d for d in stored.spec.disks if d.volume.volume_id != volume_id] + [disk]
        try:
            await self.specs.put_async(_with_disks(stored, disks))
        except BaseException:
            if existing is None:
                await undo_after_spec_failure(
                    vm_id, "attach", self.compute.detach_disk(vm_id, volume_id, UNDO_DETACH_TIMEOUT)
                )
            raise
        clear_drift(self.drift, vm_id, VOLUMES_KEY)

    async def detach(self, vm_id: str, volume_id: str, timeout: float) -> None:
        """Unplug the volume (``compute.detach_disk``), then drop it from the stored spec.
        Not attached is success."""
        stored = self.specs.get(vm_id)
        await self.compute.detach_disk(vm_id, volume_id, timeout)
        old = _find(stored.spec, volume_id) if stored is not None else None
        if stored is None or old is None:
            return
        disks = [d for d in stored.spec.disks if d.volume.volume_id != volume_id]
        try:
            await self.specs.put_async(_with_disks(stored, disks))
        except BaseException:
            try:
                source = self.backends.for_pool(old.volume.pool).source(old.volume)
            except CorralError as exc:
                log.error("vm %s: cannot undo detach of volume %s: %s", vm_id, volume_id, exc)
                raise
            await undo_after_spec_failure(
                vm_id, "detach", self.compute.attach_disk(vm_id, old, source)
            )
            raise
        clear_drift(self.drift, vm_id, VOLUMES_KEY)

    async def resize(self, volume: VolumeRef, size_gb: int, vm_id: str | None) -> bool:
        """Grow the volume to ``size_gb``: live when ``vm_id`` runs here (the guest sees it at
        once), else on the pool. The stored spec of ``vm_id`` records the new size. Returns
        whether the grow was live."""
        backend = self.backends.for_pool(volume.pool)
        live = vm_id is not None and await self.compute.power_state(vm_id) in _LIVE
        if vm_id is not None and live:
            await self.compute.resize_disk(vm_id, volume.volume_id, size_gb * GIB)
        else:
            await backend.resize(volume, size_gb)
        stored = self.specs.get(vm_id) if vm_id is not None else None
        old = _find(stored.spec, volume.volume_id) if stored is not None else None
        if stored is not None and old is not None and old.volume.size_gb < size_gb:
            grown = old.model_copy(
                update={"volume": old.volume.model_copy(update={"size_gb": size_gb})}
            )
            disks = [grown if d is old else d for d in stored.spec.disks]
            await self.specs.put_async(_with_disks(stored, disks))
        return live

    async def set_qos(self, vm_id: str, volume_id: str, qos: VolumeQos) -> None:
        """Apply the I/O limits (``compute.set_disk_qos``), then record them in the spec."""
        stored = self.specs.get(vm_id)
        await self.compute.set_disk_qos(vm_id, volume_id, qos)
        old = _find(stored.spec, volume_id) if stored is not None else None
        if stored is None or old is None or old.qos == qos:
            return
        changed = old.model_copy(update={"qos": qos})
        disks = [changed if d is old else d for d in stored.spec.disks]
        try:
            await self.specs.put_async(_with_disks(stored, disks))
        except BaseException:
            await undo_after_spec_failure(
                vm_id, "qos", self.compute.set_disk_qos(vm_id, volume_id, old.qos)
            )
            raise

    def _stored(self, vm_id: str) -> StoredSpec:
        stored = self.specs.get(vm_id)
        if stored is None:
            raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
        return stored
