"""The whole-VM snapshot tasks of the agent: ``vm.snapshot`` (every listed data disk of a VM at
one instant, with its memory state or not) and ``vm.memory`` (restore a VM from a memory state
file, delete one).

Like ``snapshot_tasks``, the server names every file and keeps the snapshot tree; the agent makes
and deletes files through the pools' backends, takes Ceph snapshots of rbd volumes
(``RbdSnapshots.snap_create``) and moves the VM through the compute driver. The stored spec always
names each disk's active file (``DataDisk.volume.name``); disks are found by volume id.

``vm.snapshot`` of a live VM (running or paused), in this order:
1. the overlays of the file disks are made (``create_overlay``, while the guest runs on);
2. with ``quiesce``, no ``memory`` and a running VM, the guest's file systems are frozen through
   its guest agent (``fs_freeze``, at most ``quiesce_timeout`` s: no answer means unquiesced,
   which the result says). Never with ``memory`` (as libvirt's own quiesce): the memory state
   holds what the disks lack, and a guest restored from it would find its file systems frozen;
3. a running VM is paused; the Ceph snapshots are taken; ``compute.snapshot_vm`` switches every
   file disk to its overlay and saves the memory (``<memory dir>/<name>.mem``) in one libvirt
   snapshot; the spec is written;
4. the VM is resumed (if it was paused here) and the file systems thawed (whatever happened).
Files of a network file pool (NFS: QEMU's userspace client) take no live snapshot:
``InvalidState`` before anything happens (stop the VM first), as for ``snapshot.create``.

Of a stopped VM: the overlays are made, the Ceph snapshots taken, and the VM redefined on the
overlays (``define``: driver first, then the spec); ``memory`` must be None (``InvalidInput``).

A failure leaves nothing: overlays not switched to are deleted (unless the VM uses them, as
``compute.disk_file`` says), Ceph snapshots taken are removed, the memory file is removed, the VM
is resumed and thawed; the task's error stands (problems of the undo are logged). A spec write
failing after a live switch keeps what was done: a retry finds the disks on their overlays and
only writes the spec. Done already (every file disk on ``new_name`` in the spec) is success: the
Ceph snapshots are asked for again (existing ones are kept) and nothing else is done (the result
then says ``quiesced: false``). A task without file disks cannot tell it is done: a retry takes
its Ceph snapshots (kept when they exist) and its memory again.

Result: ``{"quiesced": bool, "memory_bytes": int | None, "frozen_bytes": {volume_id: int |
None}}``, the last what each new snapshot takes on its pool (``frozen_bytes``; None: not
measurable, which never fails the task).

``vm.memory``: ``restore`` starts the defined, stopped VM from ``<memory dir>/<name>.mem`` on
the disk files of its current definition (``compute.restore_vm``; running already is success, a
missing file ``NotFound``); ``delete`` removes the file (absent is success). The memory
directory is mode 0700, its files 0600 (they hold the guest's RAM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.agent.compute.driver import ComputeDriver
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.backend import (
    DiskSource,
    RbdSnapshots,
    VolumeBackend,
    allocated_or_none,
    snap_allocated_or_none,
)
from corral.agent.storage.volumes import Backends
from corral.api.agent import DataDisk, VmMemoryTask, VmSnapshotTask, VmSpec, VolumeRef
from corral.api.errors import CorralError, InvalidInput, InvalidState, NotFound, StorageError
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

QUIESCE_TIMEOUT_S = 5.0
"""How long the guest agent gets to freeze (and, separately, to thaw) the file systems."""
MEMORY_SUFFIX = ".mem"
_LIVE = (PowerState.running, PowerState.paused)


@dataclass(frozen=True)
class _FileDisk:
    """A file disk of the task: its volume (``name``: the active file), the overlay to make,
    both as the driver reaches them, and whether the spec names the overlay already."""

    volume: VolumeRef
    new_name: str
    backend: VolumeBackend
    old: DiskSource
    new: DiskSource
    done: bool


@dataclass(frozen=True)
class _CephDisk:
    volume: VolumeRef
    snap: str
    backend: RbdSnapshots


def _where(source: DiskSource) -> str:
    """How ``compute.disk_file`` names a source: its path, or its network name."""
    return source.path if source.kind == "file" else source.name


class VmSnapshotTasks:
    """Runs ``vm.snapshot`` and ``vm.memory`` tasks (see the module docstring). The caller
    serializes the tasks of one VM. ``define`` defines a VM from a spec and stores the spec
    (``TaskExecutor.define``); ``memory_dir`` holds the memory state files."""

    def __init__(
        self,
        *,
        compute: ComputeDriver,
        backends: Backends,
        specs: SpecStore,
        define: Callable[[VmSpec], Awaitable[None]],
        memory_dir: Path,
        quiesce_timeout: float = QUIESCE_TIMEOUT_S,
    ) -> None:
        self.compute = compute
        self.backends = backends
        self.specs = specs
        self.define = define
        self.memory_dir = memory_dir.absolute()
        self.quiesce_timeout = quiesce_timeout

    async def run(self, payload: VmSnapshotTask | VmMemoryTask) -> dict[str, object]:
        match payload:
            case VmSnapshotTask():
                quiesced, size = await self.snapshot(payload)
                frozen = await self.frozen_bytes(payload)
                return {"quiesced": quiesced, "memory_bytes": size, "frozen_bytes": frozen}
            case VmMemoryTask(op="restore"):
                await self.restore(payload.vm_id, payload.name)
                return {}
            case VmMemoryTask():
                await self.delete_memory(payload.name)
                return {}

    def memory_path(self, name: str) -> Path:
        """The memory state file ``name`` (``InvalidInput`` for a name that is not a plain
        file name; the task model allows only ``A-Za-z0-9_-``)."""
        if not name or "/" in name or name in (".", "..") or "\0" in name:
            raise InvalidInput("invalid memory state name", name=name)
        return self.memory_dir / f"{name}{MEMORY_SUFFIX}"

    # --- vm.snapshot ---------------------------------------------------------------------------

    async def snapshot(self, task: VmSnapshotTask) -> tuple[bool, int | None]:
        """Take the snapshot; returns (quiesced, size of the memory file or None)."""
        stored = self._stored(task.vm_id)
        files, cephs = self._plan(stored, task)
        memory = self.memory_path(task.memory) if task.memory is not None else None
        if files and all(f.done for f in files):
            for c in cephs:
                await c.backend.snap_create(c.volume, c.snap)
            return False, await self._memory_size(task.vm_id, memory)
        state = await self.compute.power_state(task.vm_id)
        if state in _LIVE:
            return await self._live(stored, task, state, files, cephs, memory)
        if memory is not None:
            raise InvalidInput(
                f"VM {task.vm_id} is {state.value}: a stopped VM has no memory state to save",
                vm_id=task.vm_id,
                power_state=state.value,
            )
        await self._offline(stored, files, cephs)
        return False, None

    async def _live(
        self,
        stored: StoredSpec,
        task: VmSnapshotTask,
        state: PowerState,
        files: list[_FileDisk],
        cephs: list[_CephDisk],
        memory: Path | None,
    ) -> tuple[bool, int | None]:
        vm_id = task.vm_id
        for f in files:
            if f.new.kind != "file":
                raise InvalidState(
                    f"cannot snapshot volume {f.volume.volume_id} of VM {vm_id} while the VM"
                    f" runs: {f.volume.pool.type} volumes take no live snapshot here; stop the"
                    " VM first",
                    vm_id=vm_id,
                    volume_id=f.volume.volume_id,
                    pool_type=f.volume.pool.type,
                    power_state=state.value,
                )
        if files and await self._switched(vm_id, files):
            for c in cephs:
                await c.backend.snap_create(c.volume, c.snap)
            await self._put_names(stored, files)
            return False, await self._memory_size(vm_id, memory)
        made = await self._overlays(vm_id, files)
        taken: list[_CephDisk] = []
        switched = False
        try:
            if memory is not None:
                await asyncio.to_thread(self._memory_dir)
            quiesce = task.quiesce and memory is None
            async with self._held(vm_id, state, quiesce) as quiesced:
                for c in cephs:
                    await c.backend.snap_create(c.volume, c.snap)
                    taken.append(c)
                if files or memory is not None:
                    sources = {f.volume.volume_id: f.new for f in files}
                    await self.compute.snapshot_vm(vm_id, sources, memory)
                switched = True
                await self._put_names(stored, files)
        except BaseException:
            if not switched:
                await self._undo(vm_id, made, taken, memory)
            raise
        return quiesced, await self._memory_size(vm_id, memory)

    async def _offline(
        self, stored: StoredSpec, files: list[_FileDisk], cephs: list[_CephDisk]
    ) -> None:
        vm_id = stored.spec.vm_id
        made = await self._overlays(vm_id, files)
        taken: list[_CephDisk] = []
        try:
            for c in cephs:
                await c.backend.snap_create(c.volume, c.snap)
                taken.append(c)
            if files:
                await self.define(_renamed(stored.spec, files))
        except BaseException:
            await self._undo(vm_id, made, taken, None)
            raise

    @contextlib.asynccontextmanager
    async def _held(self, vm_id: str, state: PowerState, quiesce: bool) -> AsyncIterator[bool]:
        """Freeze (``quiesce`` and running: yields whether it worked) and pause a running VM
        for the body; resume it and thaw afterwards, whatever happens. A resume failing after
        the body failed is logged (the body's error stands)."""
        running = state == PowerState.running
        freeze = quiesce and running
        frozen = await self.compute.fs_freeze(vm_id, self.quiesce_timeout) if freeze else False
        try:
            if running:
                await self.compute.pause(vm_id)
            try:
                yield frozen
            except BaseException:
                if running:
                    try:
                        await self.compute.resume(vm_id)
                    except CorralError as exc:
                        log.error("vm %s: cannot resume after a failed snapshot: %s", vm_id, exc)
                raise
            if running:
                await self.compute.resume(vm_id)
        finally:
            if freeze:
                try:
                    await self.compute.fs_thaw(vm_id, self.quiesce_timeout)
                except CorralError as exc:  # not frozen: the freeze may still have landed late
                    level = logging.ERROR if frozen else logging.WARNING
                    log.log(level, "vm %s: cannot thaw the guest's file systems: %s", vm_id, exc)

    async def frozen_bytes(self, task: VmSnapshotTask) -> dict[str, int | None]:
        """What each disk's new snapshot takes on its pool, by volume id, once the snapshot is
        taken: the frozen file (``volume.name``, ``VolumeBackend.allocated``) of a file disk,
        the Ceph snapshot (``RbdSnapshots.snap_allocated``) of an rbd one. None for one that
        cannot be measured: measuring never fails the task."""
        sizes: dict[str, int | None] = {}
        for item in task.disks:
            volume = item.volume
            try:
                backend = self.backends.for_pool(volume.pool)
            except CorralError as exc:
                log.warning("cannot measure volume %s: %s", volume.volume_id, exc)
                sizes[volume.volume_id] = None
                continue
            if item.ceph_snap is not None and isinstance(backend, RbdSnapshots):
                size = await snap_allocated_or_none(backend, volume, item.ceph_snap)
            elif item.ceph_snap is not None:
                size = None
            else:
                size = await allocated_or_none(backend, volume, volume.name)
            sizes[volume.volume_id] = size
        return sizes

    # --- vm.memory -----------------------------------------------------------------------------

    async def restore(self, vm_id: str, name: str) -> None:
        """Start the stopped VM from the memory state ``name`` (see the module docstring)."""
        self._stored(vm_id)
        state = await self.compute.power_state(vm_id)
        if state == PowerState.running:
            return
        if state == PowerState.absent:
            raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
        path = self.memory_path(name)
        if not await asyncio.to_thread(path.is_file):
            raise NotFound(
                f"memory state {name} of VM {vm_id} is not on this host ({path})",
                vm_id=vm_id,
                name=name,
                path=str(path),
            )
        await self.compute.restore_vm(vm_id, path)

    async def delete_memory(self, name: str) -> None:
        """Remove the memory state file ``name``; absent is success."""
        path = self.memory_path(name)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(
                "cannot delete the memory state file", path=str(path), reason=exc.strerror
            ) from exc

    # --- helpers -------------------------------------------------------------------------------

    def _stored(self, vm_id: str) -> StoredSpec:
        stored = self.specs.get(vm_id)
        if stored is None:
            raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
        return stored

    def _plan(
        self, stored: StoredSpec, task: VmSnapshotTask
    ) -> tuple[list[_FileDisk], list[_CephDisk]]:
        """The task's disks checked against the spec: ``NotFound`` for a volume not attached,
        ``InvalidInput`` for a volume listed twice, an overlay named like its active file or an
        rbd snapshot on a pool without them, ``InvalidState`` if the spec has a file disk on
        neither its active file nor its overlay (the server's idea of the disk is wrong)."""
        vm_id = task.vm_id
        ids = [d.volume.volume_id for d in task.disks]
        if len(set(ids)) != len(ids):
            raise InvalidInput("a volume is listed twice in the snapshot", vm_id=vm_id)
        attached = {d.volume.volume_id: d for d in stored.spec.disks}
        files: list[_FileDisk] = []
        cephs: list[_CephDisk] = []
        for item in task.disks:
            volume = item.volume
            disk = attached.get(volume.volume_id)
            if disk is None:
                raise NotFound(
                    f"volume {volume.volume_id} is not attached to VM {vm_id}",
                    vm_id=vm_id,
                    volume_id=volume.volume_id,
                )
            backend = self.backends.for_pool(volume.pool)
            if item.ceph_snap is not None:
                if not isinstance(backend, RbdSnapshots):
                    raise InvalidInput(
                        f"snapshots of {volume.pool.type} volumes are not Ceph snapshots",
                        vm_id=vm_id,
                        volume_id=volume.volume_id,
                        type=volume.pool.type,
                    )
                cephs.append(_CephDisk(volume=volume, snap=item.ceph_snap, backend=backend))
                continue
            new_name = item.new_name
            assert new_name is not None  # the model has one or the other
            files.append(self._file_disk(vm_id, disk, volume, new_name, backend))
        return files, cephs

    @staticmethod
    def _file_disk(
        vm_id: str, disk: DataDisk, volume: VolumeRef, new_name: str, backend: VolumeBackend
    ) -> _FileDisk:
        if new_name == volume.name:
            raise InvalidInput(
                "the overlay of a disk must be named differently from its active file",
                vm_id=vm_id,
                volume_id=volume.volume_id,
                name=new_name,
            )
        active = disk.volume.name
        if active not in (volume.name, new_name):
            raise InvalidState(
                f"the active file of volume {volume.volume_id} in VM {vm_id} is {active},"
                f" not {volume.name}",
                vm_id=vm_id,
                volume_id=volume.volume_id,
                active=active,
                name=volume.name,
            )
        return _FileDisk(
            volume=volume,
            new_name=new_name,
            backend=backend,
            old=backend.source(volume),
            new=backend.source(volume.model_copy(update={"name": new_name})),
            done=active == new_name,
        )

    async def _switched(self, vm_id: str, files: Sequence[_FileDisk]) -> bool:
        """Whether the live VM has every file disk on its overlay already (False: on its active
        file). ``InvalidState`` if it has some on their overlays only, or a disk elsewhere."""
        on_new: list[str] = []
        for f in files:
            current = await self.compute.disk_file(vm_id, f.volume.volume_id)
            if current == _where(f.new):
                on_new.append(f.volume.volume_id)
            elif current is not None and current != _where(f.old):
                raise InvalidState(
                    f"the disk of volume {f.volume.volume_id} in VM {vm_id} is on {current},"
                    f" not on {f.volume.name}",
                    vm_id=vm_id,
                    volume_id=f.volume.volume_id,
                    file=current,
                )
        if on_new and len(on_new) != len(files):
            raise InvalidState(
                f"only some disks of VM {vm_id} are on their new files",
                vm_id=vm_id,
                switched=sorted(on_new),
            )
        return bool(on_new)

    async def _overlays(self, vm_id: str, files: Sequence[_FileDisk]) -> list[_FileDisk]:
        """Make every overlay; if one fails, delete those made and raise."""
        made: list[_FileDisk] = []
        try:
            for f in files:
                await f.backend.create_overlay(f.volume, f.new_name, f.volume.name)
                made.append(f)
        except BaseException:
            await self._undo(vm_id, made, [], None)
            raise
        return made

    async def _put_names(self, stored: StoredSpec, files: Sequence[_FileDisk]) -> None:
        """Record in the spec that the disks are on their overlays (after the driver switched)."""
        if files:
            spec = _renamed(stored.spec, files)
            await self.specs.put_async(stored.model_copy(update={"spec": spec}))

    def _memory_dir(self) -> None:
        """Create the memory directory (0700) if needed; ``StorageError`` if that fails."""
        try:
            self.memory_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.memory_dir.chmod(0o700)
        except OSError as exc:
            raise StorageError(
                "cannot create the memory state directory",
                path=str(self.memory_dir),
                reason=exc.strerror,
            ) from exc

    async def _memory_size(self, vm_id: str, memory: Path | None) -> int | None:
        """The memory file's size (made 0600 first); None without one. ``InvalidState`` if it
        is missing although the snapshot was taken."""
        if memory is None:
            return None

        def measure() -> int:
            memory.chmod(0o600)
            return memory.stat().st_size

        try:
            return await asyncio.to_thread(measure)
        except FileNotFoundError:
            raise InvalidState(
                f"the disks of VM {vm_id} were switched but its memory state {memory.name}"
                " is missing",
                vm_id=vm_id,
                path=str(memory),
            ) from None
        except OSError as exc:
            raise StorageError(
                "cannot read the memory state file", path=str(memory), reason=exc.strerror
            ) from exc

    async def _undo(
        self,
        vm_id: str,
        made: Sequence[_FileDisk],
        taken: Sequence[_CephDisk],
        memory: Path | None,
    ) -> None:
        """Remove what a failed snapshot made: Ceph snapshots, overlays the VM does not use
        (or whose use cannot be known: kept), the memory file. Problems are logged."""
        for c in taken:
            try:
                await c.backend.snap_remove(c.volume, c.snap)
            except CorralError as exc:
                log.error("vm %s: cannot remove Ceph snapshot %s: %s", vm_id, c.snap, exc)
        for f in made:
            try:
                in_use = await self.compute.disk_file(vm_id, f.volume.volume_id) == _where(f.new)
            except NotFound:
                in_use = False
            except CorralError as exc:
                log.error(
                    "vm %s: cannot tell whether %s is in use; keeping it: %s",
                    vm_id,
                    f.new_name,
                    exc,
                )
                continue
            if in_use:
                log.error(
                    "vm %s: the snapshot failed but the VM uses %s; keeping it", vm_id, f.new_name
                )
                continue
            try:
                await f.backend.delete_file(f.volume, f.new_name)
            except CorralError as exc:
                log.error(
                    "vm %s: cannot delete %s after a failed snapshot: %s", vm_id, f.new_name, exc
                )
        if memory is not None:
            try:
                await asyncio.to_thread(memory.unlink, missing_ok=True)
            except OSError as exc:
                log.error("vm %s: cannot remove %s: %s", vm_id, memory, exc)


def _renamed(spec: VmSpec, files: Sequence[_FileDisk]) -> VmSpec:
    """``spec`` with each file disk on its overlay."""
    names = {f.volume.volume_id: f.new_name for f in files}
    disks = [
        d.model_copy(
            update={"volume": d.volume.model_copy(update={"name": names[d.volume.volume_id]})}
        )
        if d.volume.volume_id in names
        else d
        for d in spec.disks
    ]
    return spec.model_copy(update={"disks": disks})
