"""What each agent task does with the drivers and the spec store.

Every task first calls ``faults.check("agent." + kind)`` (e.g. ``agent.vm.start``): fault injection
that works whatever the driver. The simulated drivers check the same ``FaultPlan`` under their own
operation names (``vm.start`` …), so tests can fail either the agent step or the driver call.

Ordering rules (so that a crash at any point leaves a state reconcile handles correctly):
- ``vm.define``: the driver defines first, then the spec file is written. A spec file therefore only
  ever describes a definition the hypervisor accepted, and "spec without VM" at start-up safely means
  "lost: redefine it". If writing the spec fails, the driver change is undone (old definition
  restored, or the new VM undefined). A crash between the two leaves a VM without spec, reported as
  drift "unknown to agent" until the server retries the (idempotent) define.
- ``vm.undefine``: the spec file is renamed to ``.deleting`` first, then the driver undefines, then
  the file is removed. If the driver fails, the file is renamed back. A crash leaves a ``.deleting``
  file that reconcile finishes (undefine again, remove), so a deleted VM never comes back.
- ``volume.*``: see ``volume_tasks`` (driver first, then the spec, undone the same way);
  ``nic.attach``/``nic.detach``: see ``nic_tasks`` (the same rules; serialized on their VM);
  ``snapshot.*``: see ``snapshot_tasks`` (serialized like the volume tasks); ``vm.snapshot``
  and ``vm.memory``: see ``vm_snapshots`` (serialized on their VM; memory state files in
  ``<data>/memory``, next to the spec store's ``<data>/vms``). The VM's
  data disks are defined with it: ``vm.define`` hands the driver each disk of the spec with its
  source (from the pool's backend).

Tasks are serialized per ``payload_key``: the VM id, or ``volume:<volume_id>`` for the volume
tasks that have no VM (create, delete, resize of a detached volume), or ``pools`` for
``pools.sync`` (see ``corral.agent.pools``: stores the host's pool set, prepares and measures
each pool, answers ``{"pools": [PoolReport...], "digest": ...}``). ``image.capture`` (see
``corral.agent.capture``) is serialized on its VM or its volume, ``image.publish`` (see
``corral.agent.publish``) on ``image:<image_id>``. ``rbd.snapshot`` (a Ceph
snapshot of an rbd volume's image: create, rollback, remove; answers ``{}``) runs on the
volume, through its pool's backend (an ``RbdSnapshots``, else ``InvalidInput``).
``network.apply`` is serialized on ``network`` and handed to the host's ``NetworkPlane``
(``corral.agent.network.plane``; none: ``InvalidInput``), answering ``{"digest": ...}``. After a
task that may add or remove a VM's ports (``vm.start``, ``vm.stop``, ``vm.undefine``,
``nic.attach``, ``nic.detach``, ``vm.memory`` restore) succeeded, the plane is refreshed (their
flows loaded or dropped); a failed refresh is logged and never fails the task.
"""

from __future__ import annotations

import logging
from pathlib import Path

from corral.agent.capture import ImageCapture, Uploader
from corral.agent.compute.driver import ComputeDriver
from corral.agent.faults import FaultPlan
from corral.agent.network.plane import NetworkPlane
from corral.agent.nic_tasks import NicTasks
from corral.agent.pools import HostPools
from corral.agent.publish import ImagePublish
from corral.agent.snapshot_tasks import SnapshotPayload, SnapshotTasks
from corral.agent.specs import SpecStore, StoredSpec, check_vm_id
from corral.agent.storage.backend import ImageCache, RbdSnapshots, snap_allocated_or_none
from corral.agent.storage.driver import Fetcher, VolumeDriver
from corral.agent.storage.volumes import Backends
from corral.agent.vm_snapshots import VmSnapshotTasks
from corral.agent.volume_tasks import VolumeTasks, check_volume_id
from corral.api.agent import (
    DiskCreate,
    DiskDelete,
    DiskFlatten,
    DiskFreeze,
    DiskThaw,
    ImageCaptureTask,
    ImagePublishTask,
    ImageRef,
    NetworkApply,
    NicAttachTask,
    NicDetachTask,
    PoolImageForget,
    PoolsSync,
    RbdSnapshotTask,
    SnapshotCreateTask,
    SnapshotDeleteFileTask,
    SnapshotRebaseTask,
    SnapshotRevertTask,
    VmCdrom,
    VmDefine,
    VmMemoryTask,
    VmPower,
    VmSnapshotTask,
    VmSpec,
    VmUndefine,
    VolumeAttachTask,
    VolumeCopyTask,
    VolumeCreateTask,
    VolumeDeleteTask,
    VolumeDetachTask,
    VolumeQosTask,
    VolumeRef,
    VolumeResizeTask,
    has_root_volume,
)
from corral.api.errors import CorralError, InvalidInput, NotFound
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

Payload = (
    DiskCreate
    | DiskDelete
    | DiskFreeze
    | DiskThaw
    | DiskFlatten
    | VmDefine
    | VmUndefine
    | VmPower
    | VmCdrom
    | VolumeCreateTask
    | VolumeDeleteTask
    | VolumeCopyTask
    | VolumeAttachTask
    | VolumeDetachTask
    | VolumeResizeTask
    | VolumeQosTask
    | NicAttachTask
    | NicDetachTask
    | PoolsSync
    | SnapshotPayload
    | RbdSnapshotTask
    | ImageCaptureTask
    | ImagePublishTask
    | PoolImageForget
    | VmSnapshotTask
    | VmMemoryTask
    | NetworkApply
)


def payload_vm_id(payload: Payload) -> str | None:
    """The VM a task is about; None for volume tasks without one."""
    match payload:
        case VmDefine():
            return payload.spec.vm_id
        case ImageCaptureTask():
            return payload.vm_id
        case (
            PoolImageForget()
            | ImagePublishTask()
            | VolumeCreateTask()
            | VolumeDeleteTask()
            | VolumeCopyTask()
            | PoolsSync()
            | SnapshotDeleteFileTask()
            | RbdSnapshotTask()
            | NetworkApply()
        ):
            return None
        case _:
            return payload.vm_id


def payload_volume_id(payload: Payload) -> str | None:
    """The data volume a task is about; None for VM tasks."""
    match payload:
        case VolumeCreateTask() | VolumeDeleteTask() | VolumeResizeTask():
            return payload.volume.volume_id
        case VolumeCopyTask():
            return payload.source.volume_id
        case (
            SnapshotCreateTask()
            | SnapshotRevertTask()
            | SnapshotRebaseTask()
            | SnapshotDeleteFileTask()
            | RbdSnapshotTask()
        ):
            return payload.volume.volume_id
        case VolumeAttachTask():
            return payload.disk.volume.volume_id
        case ImageCaptureTask():
            return payload.volume.volume_id if payload.volume is not None else None
        case VolumeDetachTask() | VolumeQosTask():
            return payload.volume_id
        case _:
            return None


def payload_key(payload: Payload) -> str:
    """What the task is serialized on: its VM id, else ``volume:<volume_id>`` (``pools`` for
    ``pools.sync``, ``network`` for ``network.apply``, ``image:<image_id>`` for
    ``image.publish``)."""
    if isinstance(payload, PoolsSync):
        return "pools"
    if isinstance(payload, NetworkApply):
        return "network"
    if isinstance(payload, PoolImageForget):
        return f"pool-image:{payload.pool.id}:{payload.image_id}"
    if isinstance(payload, ImagePublishTask):
        return f"image:{payload.image_id}"
    vm_id = payload_vm_id(payload)
    return vm_id if vm_id is not None else f"volume:{payload_volume_id(payload)}"


def _moves_ports(payload: Payload) -> bool:
    """Whether the task, done, may have added or removed OVS ports of a VM's NICs."""
    match payload:
        case VmPower():
            return payload.kind in ("vm.start", "vm.stop")
        case VmMemoryTask():
            return payload.op == "restore"
        case VmUndefine() | NicAttachTask() | NicDetachTask():
            return True
        case _:
            return False


async def _no_upload(path: str, source: Path) -> tuple[int, str]:
    raise InvalidInput("this agent cannot send images to a server", path=path)


class TaskExecutor:
    """Runs task payloads against one host's drivers. ``drift`` notes of a VM are cleared when a
    define or undefine of it succeeds."""

    def __init__(
        self,
        *,
        compute: ComputeDriver,
        volumes: VolumeDriver,
        specs: SpecStore,
        faults: FaultPlan,
        fetch: Fetcher,
        drift: dict[str, list[str]],
        backends: Backends | None = None,
        pools: HostPools | None = None,
        upload: Uploader | None = None,
        memory_dir: Path | None = None,
        network: NetworkPlane | None = None,
    ) -> None:
        self.compute = compute
        self.volumes = volumes
        self.specs = specs
        self.faults = faults
        self.fetch = fetch
        self.drift = drift
        self.backends = backends if backends is not None else Backends({})
        self.pools = pools
        self.network = network
        self.volume_tasks = VolumeTasks(
            compute=compute,
            backends=self.backends,
            specs=specs,
            drift=drift,
            image_path=self._image_path,
        )
        self.capture = ImageCapture(
            volumes=volumes,
            backends=self.backends,
            upload=upload or _no_upload,
            compute=compute,
            specs=specs,
        )
        self.publish = ImagePublish(volumes=volumes, upload=upload or _no_upload)
        self.nic_tasks = NicTasks(compute=compute, specs=specs, drift=drift)
        self.snapshot_tasks = SnapshotTasks(
            compute=compute, backends=self.backends, specs=specs, define=self.define
        )
        self.vm_snapshots = VmSnapshotTasks(
            compute=compute,
            backends=self.backends,
            specs=specs,
            define=self.define,
            memory_dir=memory_dir if memory_dir is not None else specs.directory.parent / "memory",
        )

    async def run(self, payload: Payload) -> dict[str, object]:
        """Do the task; returns its result or raises a ``CorralError`` (``InvalidInput`` for a
        VM or volume id the agent cannot use, before anything happens)."""
        vm_id = payload_vm_id(payload)
        if vm_id is not None:
            check_vm_id(vm_id)
        volume_id = payload_volume_id(payload)
        if volume_id is not None:
            check_volume_id(volume_id)
        self.faults.check(f"agent.{payload.kind}")
        if isinstance(payload, NetworkApply):
            return await self._network_apply(payload)
        result = await self._run(self._on_our_bridge(payload))
        if _moves_ports(payload):
            await self.refresh_network()
        return result

    async def _run(self, payload: Payload) -> dict[str, object]:
        volume_id = payload_volume_id(payload)
        if isinstance(payload, PoolsSync):
            return await self._pools_sync(payload)
        if isinstance(payload, ImageCaptureTask):
            return await self.capture.run(payload)
        if isinstance(payload, ImagePublishTask):
            return await self.publish.run(payload)
        if isinstance(payload, PoolImageForget):
            backend = self.backends.for_pool(payload.pool)
            if isinstance(backend, ImageCache):
                await backend.forget_image(payload.pool, payload.image_id)
            return {}
        if volume_id is not None:
            return await self._volume_task(payload)
        match payload:
            case DiskCreate():
                path = await self.volumes.create_vm_disk(
                    payload.vm_id, payload.image, payload.size_gb, self.fetch
                )
                return {"path": path}
            case DiskDelete():
                await self.volumes.delete_vm_disk(payload.vm_id)
                return {}
            case DiskFreeze():
                return {"layer": await self.volumes.freeze_vm_disk(payload.vm_id, payload.layer)}
            case DiskThaw():
                await self.volumes.thaw_vm_disk(payload.vm_id, payload.layer)
                return {}
            case DiskFlatten():
                return {"live": await self.flatten(payload.vm_id)}
            case VmDefine():
                await self.define(payload.spec)
                return {}
            case VmUndefine():
                await self.undefine(payload.vm_id)
                return {}
            case VmPower():
                return {"power_state": await self.power(payload)}
            case VmCdrom():
                return {"cdrom": await self.cdrom(payload.vm_id, payload.image)}
            case VmSnapshotTask() | VmMemoryTask():
                return await self.vm_snapshots.run(payload)
            case NicAttachTask():
                await self.nic_tasks.attach(payload.vm_id, payload.nic)
                return {}
            case NicDetachTask():
                await self.nic_tasks.detach(payload.vm_id, payload.nic_id, payload.timeout)
                return {}
        raise AssertionError(f"unhandled task {payload.kind}")  # pragma: no cover

    def _on_our_bridge(self, payload: Payload) -> Payload:
        """NICs plugged into this host's integration bridge (the plane's ``bridge``): the server
        does not know what an agent calls it, a NIC's ``bridge`` names it only where the host
        has no network plane."""
        network = self.network
        if network is None:
            return payload
        match payload:
            case VmDefine() if payload.spec.nics:
                nics = [n.model_copy(update={"bridge": network.bridge}) for n in payload.spec.nics]
                spec = payload.spec.model_copy(update={"nics": nics})
                return payload.model_copy(update={"spec": spec})
            case NicAttachTask():
                nic = payload.nic.model_copy(update={"bridge": network.bridge})
                return payload.model_copy(update={"nic": nic})
            case _:
                return payload

    async def _network_apply(self, payload: NetworkApply) -> dict[str, object]:
        network = self.network
        if network is None:
            raise InvalidInput("this agent has no network plane")
        return {"digest": await network.apply(payload)}

    async def refresh_network(self) -> None:
        """Refresh the network plane (if any); failures are logged, never raised."""
        if self.network is None:
            return
        try:
            await self.network.refresh()
        except CorralError as exc:
            log.warning("refreshing the network after a VM's ports changed failed: %s", exc)
        except Exception:
            log.exception("refreshing the network after a VM's ports changed failed")

    async def _pools_sync(self, payload: PoolsSync) -> dict[str, object]:
        pools = self.pools
        if pools is None:
            raise InvalidInput("this agent keeps no storage pools")
        reports = await pools.sync(payload.pools)
        return {"pools": [r.model_dump(mode="json") for r in reports], "digest": pools.digest}

    async def _volume_task(self, payload: Payload) -> dict[str, object]:
        tasks = self.volume_tasks
        match payload:
            case (
                SnapshotCreateTask()
                | SnapshotRevertTask()
                | SnapshotRebaseTask()
                | SnapshotDeleteFileTask()
            ):
                return await self.snapshot_tasks.run(payload)
            case VolumeCreateTask():
                await tasks.create(payload.volume, payload.image)
            case VolumeDeleteTask():
                await tasks.delete(payload.volume)
            case VolumeCopyTask():
                await self.copy_volume(payload.source, payload.target)
            case VolumeAttachTask():
                await tasks.attach(payload.vm_id, payload.disk)
            case VolumeDetachTask():
                await tasks.detach(payload.vm_id, payload.volume_id, payload.timeout)
            case VolumeResizeTask():
                live = await tasks.resize(payload.volume, payload.size_gb, payload.vm_id)
                return {"live": live}
            case VolumeQosTask():
                await tasks.set_qos(payload.vm_id, payload.volume_id, payload.qos)
            case RbdSnapshotTask():
                return await self.rbd_snapshot(payload)
            case _:
                raise AssertionError(f"not a volume task: {payload.kind}")  # pragma: no cover
        return {}

    async def rbd_snapshot(self, payload: RbdSnapshotTask) -> dict[str, object]:
        """``rbd.snapshot``: ``op`` on the Ceph snapshot ``snap`` of the volume's image, by its
        pool's backend; ``InvalidInput`` if that backend has no Ceph snapshots. Result: for
        ``create`` ``{"bytes": int | None}`` (what the snapshot takes in the pool,
        ``snap_allocated``; None: not measurable, never an error), else ``{}``."""
        volume = payload.volume
        backend = self.backends.for_pool(volume.pool)
        if not isinstance(backend, RbdSnapshots):
            raise InvalidInput(
                f"snapshots of {volume.pool.type} volumes are not Ceph snapshots",
                pool_id=volume.pool.id,
                volume_id=volume.volume_id,
                type=volume.pool.type,
            )
        match payload.op:
            case "create":
                await backend.snap_create(volume, payload.snap)
                return {"bytes": await snap_allocated_or_none(backend, volume, payload.snap)}
            case "rollback":
                await backend.snap_rollback(volume, payload.snap)
            case "remove":
                await backend.snap_remove(volume, payload.snap)
                return {"sizes": await backend.snap_sizes(volume)}
            case "clone":
                if payload.target is None:
                    raise InvalidInput(
                        "a clone needs its target volume", volume_id=volume.volume_id
                    )
                await backend.snap_clone(volume, payload.snap, payload.target)
        return {}

    async def define(self, spec: VmSpec) -> None:
        """Define the VM with its data disks (each with its source from the pool's backend; a
        disk ``vda`` is its root volume, else the root disk is this host's ``disk_path``), then
        store the spec; see the module docstring."""
        vm_id = spec.vm_id
        disk_path = None if has_root_volume(spec) else self.volumes.disk_path(vm_id)
        disks = self.volume_tasks.sources(spec.disks)
        cdrom = await self._media(spec.cdrom)
        old = self.specs.get(vm_id)
        existed = old is not None or await self.compute.power_state(vm_id) != PowerState.absent
        await self.compute.define(spec, disk_path, disks, cdrom)
        try:
            stored = StoredSpec(spec=spec, disk_path=disk_path, cdrom_path=cdrom)
            await self.specs.put_async(stored)
        except BaseException:
            await self._undo_define(vm_id, old, existed)
            raise
        self.drift.pop(vm_id, None)

    async def _undo_define(self, vm_id: str, old: StoredSpec | None, existed: bool) -> None:
        try:
            if old is not None:
                old_disks = self.volume_tasks.sources(old.spec.disks)
                await self.compute.define(old.spec, old.disk_path, old_disks, old.cdrom_path)
            elif not existed:
                await self.compute.undefine(vm_id)
        except CorralError as exc:
            log.error("vm %s: cannot undo define after spec write failed: %s", vm_id, exc)

    async def _image_path(self, image: ImageRef) -> Path:
        """The cached, checked copy of ``image`` (fetched if needed) that a data volume is
        made from: the root-disk pool's image cache (``media_path`` of the simulator is a
        ``sim://`` name, which the simulated backend does not read)."""
        return Path(await self.volumes.media_path(image, self.fetch))

    async def _media(self, image: ImageRef | None) -> str | None:
        """The cached file of the ISO ``image`` (fetched if needed); None for no image."""
        if image is None:
            return None
        if image.format != "iso":
            raise InvalidInput(
                f"image {image.id} is not an ISO: only ISO images go in a CD-ROM drive",
                image_id=image.id,
                format=image.format,
            )
        return await self.volumes.media_path(image, self.fetch)

    async def cdrom(self, vm_id: str, image: ImageRef | None) -> str | None:
        """Put ``image`` in the VM's CD-ROM drive (None: eject), live if it runs, then store the
        spec with it (the drive is switched back if that fails). Returns the medium's path.
        ``NotFound`` if the VM has no stored spec here."""
        stored = self.specs.get(vm_id)
        if stored is None:
            raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
        path = await self._media(image)
        await self.compute.set_cdrom(vm_id, path)
        spec = stored.spec.model_copy(update={"cdrom": image})
        try:
            await self.specs.put_async(stored.model_copy(update={"spec": spec, "cdrom_path": path}))
        except BaseException:
            try:
                await self.compute.set_cdrom(vm_id, stored.cdrom_path)
            except CorralError as exc:
                log.error(
                    "vm %s: cannot undo a CD-ROM change after spec write failed: %s", vm_id, exc
                )
            raise
        return path

    async def undefine(self, vm_id: str) -> None:
        stored = self.specs.begin_delete(vm_id)
        try:
            await self.compute.undefine(vm_id)
        except BaseException:
            self.specs.abort_delete(vm_id, stored)
            raise
        self.specs.delete(vm_id)
        self.drift.pop(vm_id, None)

    async def copy_volume(self, source: VolumeRef, target: VolumeRef) -> None:
        """``volume.copy``: ``source`` exported (chain flattened, qcow2) into a staging file
        next to the image cache, then ``target`` made from it by its pool's backend; the
        staging file is removed whatever happens."""
        staging = self.volumes.staging_path(f"copy-{source.volume_id}")
        try:
            await self.backends.for_pool(source.pool).export(source, source.name, staging)
            await self.backends.for_pool(target.pool).create_from(target, staging, "qcow2")
        finally:
            staging.unlink(missing_ok=True)

    async def flatten(self, vm_id: str) -> bool:
        """Make the VM's root disk standalone: a live block pull while QEMU runs, else
        offline. Returns whether it was live."""
        if await self.compute.power_state(vm_id) in (PowerState.running, PowerState.paused):
            await self.compute.flatten_root(vm_id)
            return True
        await self.volumes.flatten_vm_disk(vm_id)
        return False

    async def power(self, payload: VmPower) -> str:
        vm_id = payload.vm_id
        match payload.kind:
            case "vm.start":
                await self.compute.start(vm_id)
            case "vm.stop":
                await self.compute.stop(vm_id, force=payload.force, timeout=payload.timeout)
            case "vm.reboot":
                await self.compute.reboot(vm_id)
            case "vm.pause":
                await self.compute.pause(vm_id)
            case "vm.resume":
                await self.compute.resume(vm_id)
        return str(await self.compute.power_state(vm_id))
