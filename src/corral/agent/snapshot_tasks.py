"""The snapshot tasks of the agent: external qcow2 snapshots of data volumes, as file operations.

The server keeps the snapshot tree and names every file; the agent only makes, rebases and
deletes files (through the pool's backend) and moves VMs from one file to another (through the
compute driver), each step idempotent. ``VolumeRef.name`` of a task is a file of the volume
(for ``snapshot.create`` and ``snapshot.revert``: its active file as the server knows it); the
VM's stored spec always names the active file (``DataDisk.volume.name``), and a task whose idea
of the active file differs from the spec's is refused (``InvalidState``) rather than guessed at.

- ``snapshot.create``: live (the VM runs or is paused): the backend makes the overlay, the
  driver switches the disk to it (disk-only external snapshot), then the spec is written. Else
  the backend makes the overlay and, for a stopped VM, the VM is redefined on it (``define``:
  driver first, then the spec). If the switch fails, the overlay is deleted again unless the VM
  uses it (``compute.disk_file``), so a failed create leaves nothing.
- ``snapshot.revert``: the VM must be stopped; a new overlay of the target, the VM redefined on
  it, then the old active file deleted.
- ``snapshot.rebase``: ``live``: a block pull of the running VM's active file; else
  ``qemu-img rebase`` of a file no VM runs on (a stopped VM whose active file it is gets
  redefined from its spec afterwards, so that no stale backing chain stays in its definition).
- ``snapshot.delete``: the file is deleted, unless it is a VM's active file here.

Results: ``snapshot.create`` ``{"live": bool, "frozen_bytes": int | None}`` (what the frozen
file ``volume.name`` takes on the pool after the switch: the new snapshot's size),
``snapshot.rebase`` ``{"live": bool, "bytes": int | None}`` (what the file ``name`` takes
after the rebase), both measured by ``VolumeBackend.allocated`` (None: not measurable; a
failed measurement never fails the task); the others ``{}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from corral.agent.compute.driver import ComputeDriver
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.backend import DiskSource, VolumeBackend, allocated_or_none
from corral.agent.storage.volumes import Backends
from corral.api.agent import (
    DataDisk,
    SnapshotCreateTask,
    SnapshotDeleteFileTask,
    SnapshotRebaseTask,
    SnapshotRevertTask,
    VmSpec,
    VolumeRef,
)
from corral.api.errors import CorralError, InvalidInput, InvalidState, NotFound
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

SnapshotPayload = (
    SnapshotCreateTask | SnapshotRevertTask | SnapshotRebaseTask | SnapshotDeleteFileTask
)
_LIVE = (PowerState.running, PowerState.paused)


def where(source: DiskSource) -> str:
    """How ``compute.disk_file`` names a source: its path, or its network name."""
    return source.path if source.kind == "file" else source.name


class SnapshotTasks:
    """Runs ``snapshot.*`` tasks (see the module docstring). The caller serializes tasks per VM
    (``vm_id``) or, without one, per volume. ``define`` defines a VM from a spec and stores the
    spec (``TaskExecutor.define``)."""

    def __init__(
        self,
        *,
        compute: ComputeDriver,
        backends: Backends,
        specs: SpecStore,
        define: Callable[[VmSpec], Awaitable[None]],
    ) -> None:
        self.compute = compute
        self.backends = backends
        self.specs = specs
        self.define = define

    async def run(self, payload: SnapshotPayload) -> dict[str, object]:
        match payload:
            case SnapshotCreateTask():
                live = await self.create(
                    payload.volume, payload.new_name, payload.vm_id, payload.quiesce
                )
                frozen = await self._allocated(payload.volume, payload.volume.name)
                return {"live": live, "frozen_bytes": frozen}
            case SnapshotRevertTask():
                await self.revert(payload.volume, payload.target, payload.new_name, payload.vm_id)
                return {}
            case SnapshotRebaseTask():
                await self.rebase(
                    payload.volume, payload.name, payload.backing, payload.vm_id, payload.live
                )
                size = await self._allocated(payload.volume, payload.name)
                return {"live": payload.live, "bytes": size}
            case SnapshotDeleteFileTask():
                await self.delete(payload.volume, payload.name)
                return {}

    # --- tasks -------------------------------------------------------------------------------

    async def create(
        self, volume: VolumeRef, new_name: str, vm_id: str | None, quiesce: bool
    ) -> bool:
        """Freeze ``volume.name`` and continue on the new overlay ``new_name``; returns whether
        it was a live snapshot. Done already (the spec names ``new_name``) is success."""
        _distinct(volume, new_name=new_name, active=volume.name)
        backend = self.backends.for_pool(volume.pool)
        if vm_id is None:
            self._no_vm_here(volume)
            await backend.create_overlay(volume, new_name, volume.name)
            return False
        stored, disk = self._disk(vm_id, volume.volume_id)
        live = await self.compute.power_state(vm_id) in _LIVE
        if disk.volume.name == new_name:
            return live
        _check_active(vm_id, disk, volume.name)
        new_source = backend.source(_named(volume, new_name))
        if not live:
            await backend.create_overlay(volume, new_name, volume.name)
            await self._switch(stored, disk, new_name, backend, new_source)
            return False
        current = await self._file_of(vm_id, volume.volume_id)
        old = where(backend.source(volume))
        if current is not None and current not in (old, where(new_source)):
            raise InvalidState(
                f"the disk of volume {volume.volume_id} in VM {vm_id} is on {current},"
                f" not on {volume.name}",
                vm_id=vm_id,
                volume_id=volume.volume_id,
                file=current,
            )
        switched = current == where(new_source)
        if not switched:
            await backend.create_overlay(volume, new_name, volume.name)
        try:
            await self.compute.snapshot_disk(vm_id, volume.volume_id, new_source, quiesce)
        except BaseException:
            if not switched:
                await self._discard(vm_id, volume, new_name, new_source)
            raise
        await self._put_name(stored, disk, new_name)
        return True

    async def revert(
        self, volume: VolumeRef, target: str, new_name: str, vm_id: str | None
    ) -> None:
        """Make ``new_name`` (a new overlay of the snapshot file ``target``) the active file
        and delete the old one, ``volume.name``. The VM must be stopped. Done already (the spec
        names ``new_name``) only makes sure the old file is gone."""
        _distinct(volume, new_name=new_name, active=volume.name, target=target)
        backend = self.backends.for_pool(volume.pool)
        if vm_id is None:
            self._no_vm_here(volume)
            await backend.create_overlay(volume, new_name, target)
        else:
            stored, disk = self._disk(vm_id, volume.volume_id)
            if disk.volume.name != new_name:
                _check_active(vm_id, disk, volume.name)
                state = await self.compute.power_state(vm_id)
                if state in _LIVE:
                    raise InvalidState(
                        f"VM {vm_id} is {state.value}: stop it to revert a volume",
                        vm_id=vm_id,
                        volume_id=volume.volume_id,
                        power_state=state.value,
                    )
                await backend.create_overlay(volume, new_name, target)
                new_source = backend.source(_named(volume, new_name))
                await self._switch(stored, disk, new_name, backend, new_source)
        await backend.delete_file(volume, volume.name)

    async def rebase(
        self, volume: VolumeRef, name: str, backing: str | None, vm_id: str | None, live: bool
    ) -> None:
        """Put ``name`` on ``backing`` keeping what it reads: ``live``, a block pull of the
        running VM's active file; else ``qemu-img rebase`` of a file no VM runs on."""
        if backing == name:
            raise InvalidInput(
                "a file cannot be its own backing", volume_id=volume.volume_id, name=name
            )
        backend = self.backends.for_pool(volume.pool)
        if live:
            if vm_id is None:
                raise InvalidInput("a live rebase needs the VM", volume_id=volume.volume_id)
            _, disk = self._disk(vm_id, volume.volume_id)
            _check_active(vm_id, disk, name)
            state = await self.compute.power_state(vm_id)
            if state not in _LIVE:
                raise InvalidState(
                    f"VM {vm_id} is {state.value}: rebase {name} offline",
                    vm_id=vm_id,
                    volume_id=volume.volume_id,
                    power_state=state.value,
                )
            base = backend.source(_named(volume, backing)) if backing is not None else None
            await self.compute.block_pull(vm_id, volume.volume_id, base)
            return
        stopped_users: list[StoredSpec] = []
        for user, stored in self._users_on(volume.volume_id, name):
            state = await self.compute.power_state(user)
            if state in _LIVE:
                raise InvalidState(
                    f"{name} is the active file of VM {user}, which is {state.value}:"
                    " rebase it live",
                    vm_id=user,
                    volume_id=volume.volume_id,
                    name=name,
                )
            stopped_users.append(stored)
        await backend.rebase(volume, name, backing)
        for stored in stopped_users:
            await self.define(stored.spec)

    async def delete(self, volume: VolumeRef, name: str) -> None:
        """Delete the file ``name``; absent is success, a VM's active file ``InvalidState``."""
        users = [vm_id for vm_id, _ in self._users_on(volume.volume_id, name)]
        if users:
            raise InvalidState(
                f"{name} is the active file of volume {volume.volume_id} in a VM on this host",
                volume_id=volume.volume_id,
                name=name,
                vm_ids=users,
            )
        await self.backends.for_pool(volume.pool).delete_file(volume, name)

    # --- helpers -----------------------------------------------------------------------------

    async def _allocated(self, volume: VolumeRef, name: str) -> int | None:
        """What the file ``name`` takes on the pool now (``VolumeBackend.allocated``), for the
        result; None when it cannot be measured (never an error: the task's work is done)."""
        return await allocated_or_none(self.backends.for_pool(volume.pool), volume, name)

    def _disk(self, vm_id: str, volume_id: str) -> tuple[StoredSpec, DataDisk]:
        stored = self.specs.get(vm_id)
        if stored is None:
            raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
        disk = next((d for d in stored.spec.disks if d.volume.volume_id == volume_id), None)
        if disk is None:
            raise NotFound(
                f"volume {volume_id} is not attached to VM {vm_id}",
                vm_id=vm_id,
                volume_id=volume_id,
            )
        return stored, disk

    def _users_on(self, volume_id: str, name: str) -> list[tuple[str, StoredSpec]]:
        """The VMs here whose spec has the volume on the file ``name``."""
        return [
            (vm_id, stored)
            for vm_id, stored in sorted(self.specs.all().items())
            if any(
                d.volume.volume_id == volume_id and d.volume.name == name for d in stored.spec.disks
            )
        ]

    def _no_vm_here(self, volume: VolumeRef) -> None:
        users = self.specs.users_of(volume.volume_id)
        if users:
            raise InvalidState(
                f"volume {volume.volume_id} is attached to a VM on this host: name the VM",
                volume_id=volume.volume_id,
                vm_ids=users,
            )

    async def _file_of(self, vm_id: str, volume_id: str) -> str | None:
        """The file the VM has the volume on now (``compute.disk_file``)."""
        return await self.compute.disk_file(vm_id, volume_id)

    async def _switch(
        self,
        stored: StoredSpec,
        disk: DataDisk,
        new_name: str,
        backend: VolumeBackend,
        new_source: DiskSource,
    ) -> None:
        """Redefine the (stopped) VM with the disk on ``new_name`` and store that spec; if
        that fails, delete the new file unless the VM uses it."""
        moved = disk.model_copy(update={"volume": _named(disk.volume, new_name)})
        disks = [moved if d is disk else d for d in stored.spec.disks]
        spec = stored.spec.model_copy(update={"disks": disks})
        try:
            await self.define(spec)
        except BaseException:
            await self._discard(spec.vm_id, disk.volume, new_name, new_source)
            raise

    async def _put_name(self, stored: StoredSpec, disk: DataDisk, new_name: str) -> None:
        """Record in the spec that the disk is on ``new_name`` (after the driver switched)."""
        moved = disk.model_copy(update={"volume": _named(disk.volume, new_name)})
        disks = [moved if d is disk else d for d in stored.spec.disks]
        spec = stored.spec.model_copy(update={"disks": disks})
        await self.specs.put_async(stored.model_copy(update={"spec": spec}))

    async def _discard(
        self, vm_id: str, volume: VolumeRef, new_name: str, new_source: DiskSource
    ) -> None:
        """Undo a file made for a switch that failed: delete it unless the VM uses it (or
        whether it does cannot be known). Problems are logged: the task's error stands."""
        backend = self.backends.for_pool(volume.pool)
        try:
            if await self._file_of(vm_id, volume.volume_id) == where(new_source):
                log.error(
                    "vm %s: the switch of volume %s to %s failed, but the VM uses the file;"
                    " keeping it",
                    vm_id,
                    volume.volume_id,
                    new_name,
                )
                return
        except NotFound:
            pass
        except CorralError as exc:
            log.error(
                "vm %s: cannot tell whether %s is in use; keeping it: %s", vm_id, new_name, exc
            )
            return
        try:
            await backend.delete_file(volume, new_name)
        except CorralError as exc:
            log.error("vm %s: cannot delete %s after a failed switch: %s", vm_id, new_name, exc)


def _named(volume: VolumeRef, name: str) -> VolumeRef:
    return volume.model_copy(update={"name": name})


def _check_active(vm_id: str, disk: DataDisk, name: str) -> None:
    """``InvalidState`` unless the VM's spec has the volume on the file ``name``."""
    if disk.volume.name != name:
        raise InvalidState(
            f"the active file of volume {disk.volume.volume_id} in VM {vm_id} is"
            f" {disk.volume.name}, not {name}",
            vm_id=vm_id,
            volume_id=disk.volume.volume_id,
            active=disk.volume.name,
            name=name,
        )


def _distinct(volume: VolumeRef, **names: str) -> None:
    if len(set(names.values())) != len(names):
        raise InvalidInput(
            "the files of a snapshot task must have distinct names",
            volume_id=volume.volume_id,
            **names,
        )
