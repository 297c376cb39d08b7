"""Data volumes: create (a record; created on the pool at first attach), attach, detach, grow,
I/O limits, delete.

Each request checks everything and makes its state change in one transaction (a conditional
status change guards against a concurrent operation on the same volume), then the workflow does
the host work. Quota (``volume_gb``) and the pool's ``allocated_gb`` are charged when the
volume is recorded or grown and given back when it is deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import (
    InUse,
    InvalidInput,
    InvalidState,
    NameTaken,
    NoHostAvailable,
    PoolFull,
)
from corral.api.operations import Operation
from corral.api.vms import VmStatus
from corral.api.volumes import (
    MAX_DATA_VOLUMES,
    SnapshotSchedule,
    Volume,
    VolumeAttach,
    VolumeAttachment,
    VolumeCreate,
    VolumeMove,
    VolumeQos,
    VolumeResize,
    VolumeRole,
    VolumeStatus,
    VolumeUpdate,
)
from corral.server.db.tables import (
    HostRow,
    ImageRow,
    OperationRow,
    PoolImageCopyRow,
    SnapshotRow,
    StoragePoolClusterRow,
    StoragePoolHostRow,
    StoragePoolRow,
    VmRow,
    VolumeAttachmentRow,
    VolumeRow,
)
from corral.server.db.types import new_id, utcnow
from corral.server.identity import quotas
from corral.server.identity.access import check_if_match, creation_project, require, visible
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.images import visible_images
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.recycle import recycles, to_bin
from corral.server.workflows.volume_attach import VOLUME_ATTACH
from corral.server.workflows.volume_common import pool_host, settle_status
from corral.server.workflows.volume_delete import VOLUME_DELETE, forget_volume
from corral.server.workflows.volume_detach import VOLUME_DETACH
from corral.server.workflows.volume_move import VOLUME_MOVE
from corral.server.workflows.volume_qos import VOLUME_QOS
from corral.server.workflows.volume_resize import VOLUME_RESIZE

KIND = "volume"
DEVICES = tuple(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxy")[:MAX_DATA_VOLUMES]
ATTACHABLE_VM = {VmStatus.running, VmStatus.stopped, VmStatus.paused}
"""VM states in which volumes may be attached or detached."""
RAW_POOLS = frozenset({"iscsi", "rbd"})
GIB = 1 << 30


def to_model(
    r: VolumeRow,
    attachments: Sequence[tuple[str, str]] = (),
    snapshots_bytes: int | None = None,
) -> Volume:
    """The contract model of a volume row with its ``attachments`` (``attachments_of``) and
    ``snapshots_bytes`` (``snapshots_bytes_of``: the sum of its measured snapshot sizes, None
    when none is measured), both looked up by the caller."""
    return Volume(
        id=r.id,
        name=r.name,
        status=VolumeStatus(r.status),
        size_gb=r.size_gb,
        format=r.format,
        pool_id=r.pool_id,
        host_id=r.host_id,
        instantiated=r.instantiated,
        attachments=[VolumeAttachment(vm_id=v, device=d) for v, d in sorted(attachments)],
        shareable=r.shareable,
        role=VolumeRole(r.role),
        image_id=r.image_id,
        parent_snapshot_id=r.parent_snapshot_id,
        qos=VolumeQos.model_validate(r.qos or {}),
        snapshot_schedule=(
            SnapshotSchedule(every_minutes=r.snapshot_every_min, keep=r.snapshot_keep)
            if r.snapshot_every_min and r.snapshot_keep
            else None
        ),
        snapshots_bytes=snapshots_bytes,
        error=r.error,
        created_at=r.created_at,
        updated_at=r.updated_at,
        project_id=r.project_id,
        owner_id=r.owner_id,
        shared=r.shared,
    )


async def attachments_of(s: AsyncSession, ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """``(vm_id, device)`` of each volume of ``ids`` (one query)."""
    out: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    if ids:
        rows = await s.execute(
            select(
                VolumeAttachmentRow.volume_id, VolumeAttachmentRow.vm_id, VolumeAttachmentRow.device
            ).where(VolumeAttachmentRow.volume_id.in_(ids))
        )
        for vid, vm_id, device in rows:
            out[vid].append((vm_id, device))
    return out


async def snapshots_bytes_of(s: AsyncSession, ids: Sequence[str]) -> dict[str, int]:
    """What the snapshots of each volume of ``ids`` take on its pool: the sum of their measured
    ``used_bytes`` (one query); a volume without any measured snapshot is absent."""
    if not ids:
        return {}
    rows = await s.execute(
        select(SnapshotRow.volume_id, func.sum(SnapshotRow.used_bytes))
        .where(SnapshotRow.volume_id.in_(list(ids)), SnapshotRow.used_bytes.is_not(None))
        .group_by(SnapshotRow.volume_id)
    )
    return {vid: int(total) for vid, total in rows if total is not None}


class VolumeKind(Kind[VolumeRow, Volume]):
    """Volumes with their attachments and the size of their snapshots (one query each for
    the page)."""

    async def models(self, s: AsyncSession, rows: list[VolumeRow]) -> list[Volume]:
        ids = [r.id for r in rows]
        att = await attachments_of(s, ids)
        used = await snapshots_bytes_of(s, ids)
        return [to_model(r, att[r.id], used.get(r.id)) for r in rows]


VOLUMES = VolumeKind(KIND, VolumeRow, to_model, specs.VOLUMES, Volume)


def _op(
    svc: Services,
    s: AsyncSession,
    type: str,
    volume_id: str,
    project_id: str | None,
    caller: Caller,
    *,
    lock_key: str | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """An operation on a volume, added to ``s``: queued for a workflow when ``params`` are
    given, else recorded as finished (a change the request made by itself)."""
    return svc.runner.create(
        s,
        type=type,
        target_type=KIND,
        target_id=volume_id,
        lock_key=lock_key,
        project_id=project_id,
        user_id=caller.user_id,
        params=params,
        done=params is None,
    )


def visible_volumes(caller: Caller) -> ColumnElement[bool]:
    """The volumes ``caller`` sees (not those in the recycle bin)."""
    return and_(visible(caller, VolumeRow, KIND), VolumeRow.status != VolumeStatus.recycled.value)


def refuse_root(vol: VolumeRow, what: str) -> None:
    """``InvalidState`` (``reason="root_volume"``) for a VM's root volume: it is made and
    deleted with its VM and stays on it."""
    if vol.role == VolumeRole.root:
        raise InvalidState(
            f"volume {vol.name!r} is a VM's root volume: it cannot be {what} on its own (it"
            " goes with its VM)",
            reason="root_volume",
            volume=vol.name,
        )


async def new_volume(
    s: AsyncSession,
    pool: StoragePoolRow,
    *,
    name: str,
    project_id: str,
    owner_id: str | None,
    size_gb: int,
    status: VolumeStatus,
    shareable: bool = False,
    image_id: str | None = None,
    qos: VolumeQos | None = None,
    vid: str | None = None,
    role: VolumeRole = VolumeRole.data,
) -> VolumeRow:
    """A new volume row on ``pool`` (not added to ``s``) with its format and place on the pool:
    raw on block pools and when shareable (QEMU shares raw images only), qcow2 otherwise; a file
    ``vol-<id>[.qcow2|.raw]``, on an iscsi pool the smallest free LUN that holds ``size_gb``
    (``pick_lun``). ``pool.allocated_gb`` is charged with its size. ``vid``: its id (default:
    a new one)."""
    vid = vid or new_id()
    place, fmt = await place_on(s, pool, vid, size_gb, shareable)
    pool.allocated_gb += size_gb
    base = image_id if image_id is not None and keeps_copy(pool.type, fmt) else None
    if base is not None:  # the pool will hold its own copy of the image (``pool_images``)
        await s.merge(PoolImageCopyRow(pool_id=pool.id, image_id=base))
    return VolumeRow(
        base_image_id=base,
        id=vid,
        name=name,
        project_id=project_id,
        owner_id=owner_id,
        status=status.value,
        size_gb=size_gb,
        format=fmt,
        pool_id=pool.id,
        pool_name=place,
        shareable=shareable,
        role=role.value,
        image_id=image_id,
        qos=(qos or VolumeQos()).model_dump(),
    )


def keeps_copy(pool_type: str, fmt: str) -> bool:
    """Whether a volume of ``fmt`` made from an image on a ``pool_type`` pool is made on the
    pool's own copy of the image (the agent's ``create_on_image``: local and nfs qcow2
    overlays, rbd clones) rather than being a full copy."""
    return pool_type == "rbd" or (pool_type in ("local", "nfs") and fmt == "qcow2")


async def place_on(
    s: AsyncSession, pool: StoragePoolRow, volume_id: str, size_gb: int, shareable: bool
) -> tuple[str, str]:
    """Where a volume goes on ``pool`` and in which format: raw on block pools and when
    shareable (QEMU shares raw images only), qcow2 otherwise; a file ``vol-<id>[.qcow2|.raw]``,
    on an iscsi pool the smallest free LUN that holds ``size_gb`` (``pick_lun``)."""
    raw = pool.type in RAW_POOLS or shareable
    if pool.type == "iscsi":
        return await pick_lun(s, pool, size_gb), "raw"
    suffix = "" if pool.type in RAW_POOLS else (".raw" if raw else ".qcow2")
    return f"vol-{volume_id}{suffix}", "raw" if raw else "qcow2"


def lun_sizes(pool: StoragePoolRow) -> dict[str, int]:
    """An iscsi pool's LUNs as its hosts reported them: LUN number (a volume's ``pool_name``)
    -> bytes."""
    return {str(n): int(size) for n, size in pool.luns or []}


async def pick_lun(s: AsyncSession, pool: StoragePoolRow, size_gb: int) -> str:
    """The smallest LUN of the iscsi pool that no volume uses (also among the volumes added to
    ``s`` but not written yet) and holds ``size_gb`` GiB. ``InvalidState`` (context
    ``reason``: ``no_inventory`` before any host reported the LUNs, ``no_free_lun``)."""
    sizes = lun_sizes(pool)
    if not sizes:
        raise InvalidState(
            f"iscsi pool {pool.name!r} has no LUN inventory yet: none of its hosts reported"
            " the target's LUNs (see GET /storage-pools/{ref}/hosts)",
            pool=pool.name,
            reason="no_inventory",
        )
    used = set(await s.scalars(select(VolumeRow.pool_name).where(VolumeRow.pool_id == pool.id)))
    used |= {v.pool_name for v in s.new if isinstance(v, VolumeRow) and v.pool_id == pool.id}
    need = size_gb * GIB
    fits = [(size, int(n)) for n, size in sizes.items() if n not in used and size >= need]
    if not fits:
        free = sorted(round(size / GIB, 2) for n, size in sizes.items() if n not in used)
        raise InvalidState(
            f"iscsi pool {pool.name!r} has no free LUN of {size_gb} GiB or more"
            f" (free LUNs, GiB: {free or 'none'})",
            pool=pool.name,
            reason="no_free_lun",
            size_gb=size_gb,
            free_gb=free,
        )
    return str(min(fits)[1])


def set_schedule(vol: VolumeRow, schedule: SnapshotSchedule | None) -> None:
    """Set (or with None remove) the volume's automatic snapshots; the first is due one
    period from now."""
    if schedule is None:
        vol.snapshot_every_min = vol.snapshot_keep = vol.next_auto_snapshot_at = None
        return
    vol.snapshot_every_min = schedule.every_minutes
    vol.snapshot_keep = schedule.keep
    vol.next_auto_snapshot_at = utcnow() + timedelta(minutes=schedule.every_minutes)


def check_room(pool: StoragePoolRow, more_gb: int) -> None:
    """``PoolFull`` if the pool's known capacity cannot take ``more_gb`` (capacity unknown:
    total 0, no check; an iscsi pool: its free LUNs decide, ``pick_lun``)."""
    if pool.total_gb <= 0 or pool.type == "iscsi":
        return
    limit = pool.total_gb * pool.overcommit
    if pool.allocated_gb + more_gb > limit:
        raise PoolFull(
            f"storage pool {pool.name!r} cannot take {more_gb} GiB more"
            f" ({pool.allocated_gb:.0f} of {limit:.0f} GiB allocated)",
            pool=pool.name,
            allocated_gb=pool.allocated_gb,
            allocatable_gb=limit,
            requested_gb=more_gb,
        )


async def _visible_volume(
    s: AsyncSession, ref: str, caller: Caller, permission: str, if_match: str | None = None
) -> VolumeRow:
    vol = await get_row(s, VolumeRow, ref, KIND, where=visible_volumes(caller))
    require(caller, permission, vol.project_id)
    check_if_match(if_match, vol.id, vol.updated_at)
    return vol


async def claim_status(
    s: AsyncSession, vol: VolumeRow, allowed: set[VolumeStatus], new: VolumeStatus, verb: str
) -> None:
    """Move the volume to ``new`` if it is (still) in one of ``allowed``: a conditional UPDATE,
    so two requests cannot both pass. ``InvalidState`` otherwise."""
    result: Any = await s.execute(
        update(VolumeRow)
        .where(VolumeRow.id == vol.id, VolumeRow.status.in_([a.value for a in allowed]))
        .values(status=new.value)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        need = ", ".join(sorted(a.value for a in allowed))
        raise InvalidState(
            f"cannot {verb} volume {vol.name!r}: it is {vol.status} (needs {need})",
            volume=vol.name,
            status=vol.status,
        )


async def create_volume(*, svc: Services, spec: VolumeCreate, caller: Caller) -> Operation:
    """Record a blank volume on ``spec.pool`` (an ``enabled`` pool) in the caller's project,
    charging the quota and the pool; with ``spec.vm`` the attach follows in the same request
    (its operation is returned); with ``spec.snapshot`` it is made at once (``volume.clone``).
    Nothing is recorded on a 4xx."""
    project_id = creation_project(caller, "volume:create")
    if spec.snapshot is not None:
        return await _from_snapshot(svc, spec, project_id, caller)
    async with svc.sessionmaker() as s:
        pool = await get_row(s, StoragePoolRow, spec.pool, "storage_pool")
        image_id = (
            await source_image(s, spec.image, spec.size_gb, caller)
            if spec.image is not None
            else None
        )
        vol = await _record(
            s, pool, spec, project_id, caller, VolumeStatus.available, image_id=image_id
        )
        if spec.vm is not None:
            op = await _attach_in(svc, s, vol, spec.vm, caller)
        else:
            op = _op(svc, s, "volume.create", vol.id, project_id, caller)
        await s.commit()
    if spec.vm is not None:
        svc.runner.launch(op)
    return op_model(op)


async def _record(
    s: AsyncSession,
    pool: StoragePoolRow,
    spec: VolumeCreate,
    project_id: str,
    caller: Caller,
    status: VolumeStatus,
    *,
    image_id: str | None = None,
) -> VolumeRow:
    """Check that ``pool`` is enabled with room and the name free, then add the volume's row
    (``new_volume``) and charge the quota, flushed (``NameTaken`` on a race)."""
    if pool.state != "enabled":
        raise InvalidState(
            f"storage pool {pool.name!r} is {pool.state}: no new volumes go there",
            pool=pool.name,
            state=pool.state,
        )
    check_room(pool, spec.size_gb)
    await ensure_name_free(s, VolumeRow, spec.name, KIND, project_id=project_id)
    vol = await new_volume(
        s,
        pool,
        name=spec.name,
        project_id=project_id,
        owner_id=caller.user_id,
        size_gb=spec.size_gb,
        status=status,
        shareable=spec.shareable,
        image_id=image_id,
        qos=spec.qos or VolumeQos(),
    )
    s.add(vol)
    await quotas.adjust(s, project_id, volume_gb=spec.size_gb)
    try:
        await s.flush()
    except IntegrityError as exc:
        raise NameTaken(f"a volume named {spec.name!r} exists already", name=spec.name) from exc
    return vol


async def source_image(s: AsyncSession, ref: str, size_gb: int, caller: Caller) -> str:
    """The id of the image a new volume of ``size_gb`` copies: one the caller sees, ready, a
    disk image (not an ISO) no larger than the volume. ``NotFound``, ``InvalidState``,
    ``InvalidInput``."""
    img = await get_row(s, ImageRow, ref, "image", where=visible_images(caller))
    if img.status != "ready":
        raise InvalidState(f"image {img.name!r} is {img.status}, not ready", image=img.name)
    if img.format not in ("qcow2", "raw"):
        raise InvalidInput(
            f"image {img.name!r} is {img.format}: a volume copies a disk image (qcow2, raw)",
            image=img.name,
            format=img.format,
        )
    if img.host_id is not None:
        raise InvalidInput(
            f"image {img.name!r} is kept on one host only (a linked-clone layer, or a clone's"
            " base not published yet): a volume cannot copy it; capture an image from a VM"
            " made from it instead, or wait for the publication",
            image=img.name,
        )
    need = max(1, -(-img.virtual_size_bytes // 1024**3))
    if size_gb < need:
        raise InvalidInput(
            f"volume size {size_gb} GiB is smaller than image {img.name!r} ({need} GiB)",
            size_gb=size_gb,
            min_size_gb=need,
        )
    return img.id


async def update_volume(
    *, svc: Services, ref: str, spec: VolumeUpdate, caller: Caller, if_match: str | None = None
) -> Operation:
    """Rename and/or change the I/O limits. Limits of an attached volume are applied to its VMs
    by the ``volume.qos`` workflow (and recorded once applied)."""
    async with svc.sessionmaker() as s:
        vol = await _visible_volume(s, ref, caller, "volume:update", if_match)
        if spec.name is not None and spec.name != vol.name:
            await ensure_name_free(s, VolumeRow, spec.name, KIND, project_id=vol.project_id)
            vol.name = spec.name
        if "snapshot_schedule" in spec.model_fields_set:
            set_schedule(vol, spec.snapshot_schedule)
        new_qos = spec.qos.model_dump() if spec.qos is not None else None
        attached = await attachments_of(s, [vol.id])
        if new_qos is not None and new_qos != (vol.qos or VolumeQos().model_dump()):
            if attached[vol.id] and vol.status != VolumeStatus.in_use:
                raise InvalidState(
                    f"volume {vol.name!r} is {vol.status}: retry when it is in_use",
                    volume=vol.name,
                    status=vol.status,
                )
            if not attached[vol.id]:
                vol.qos = new_qos
            else:
                hosts = dict(
                    (await s.execute(select(VmRow.id, VmRow.host_id).where(
                        VmRow.id.in_([v for v, _ in attached[vol.id]])
                    ))).all()
                )  # fmt: skip
                op = _op(
                    svc,
                    s,
                    VOLUME_QOS.type,
                    vol.id,
                    vol.project_id,
                    caller,
                    lock_key=f"volume:{vol.id}",
                    params={
                        "volume_id": vol.id,
                        "qos": new_qos,
                        "old_qos": vol.qos or VolumeQos().model_dump(),
                        "attachments": [[v, hosts.get(v)] for v, _ in attached[vol.id]],
                    },
                )
                await _commit_named(s, vol.name)
                svc.runner.launch(op)
                return op_model(op)
        op = _op(svc, s, "volume.update", vol.id, vol.project_id, caller)
        await _commit_named(s, vol.name)
    return op_model(op)


async def _commit_named(s: AsyncSession, name: str) -> None:
    try:
        await s.commit()
    except IntegrityError as exc:
        raise NameTaken(f"a volume named {name!r} exists already", name=name) from exc


async def attach(
    *, svc: Services, ref: str, spec: VolumeAttach, caller: Caller, if_match: str | None = None
) -> Operation:
    """Attach the volume to ``spec.vm`` (see ``_attach_in``)."""
    async with svc.sessionmaker() as s:
        vol = await _visible_volume(s, ref, caller, "volume:update", if_match)
        op = await _attach_in(svc, s, vol, spec.vm, caller)
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def _attach_in(
    svc: Services, s: AsyncSession, vol: VolumeRow, vm_ref: str, caller: Caller
) -> Any:
    """In the caller's transaction: check that the VM (same project, running/stopped/paused,
    on a host of a cluster the pool is attached to, on the volume's own host for a local
    volume) may take the volume, reserve its next free device and queue ``volume.attach``.
    ``InvalidState`` / ``InUse`` otherwise (nothing changed)."""
    vm = await get_row(s, VmRow, vm_ref, "vm", where=visible(caller, VmRow, "vm"))
    require(caller, "vm:update", vm.project_id)
    if vm.project_id != vol.project_id:
        raise InvalidInput("the volume and the VM are in different projects", vm=vm.name)
    if VmStatus(vm.status) not in ATTACHABLE_VM or vm.host_id is None:
        raise InvalidState(
            f"cannot attach to VM {vm.name!r}: it is {vm.status}", vm=vm.name, status=vm.status
        )
    attached = (await attachments_of(s, [vol.id]))[vol.id]
    if any(v == vm.id for v, _ in attached):
        raise InvalidState(f"volume {vol.name!r} is attached to this VM already", vm=vm.name)
    if attached and not vol.shareable:
        raise InUse(f"volume {vol.name!r} is attached to another VM", vms=[v for v, _ in attached])
    host = await s.get(HostRow, vm.host_id)
    reachable = await s.scalar(
        select(func.count())
        .select_from(StoragePoolClusterRow)
        .where(
            StoragePoolClusterRow.pool_id == vol.pool_id,
            StoragePoolClusterRow.cluster_id == (host.cluster_id if host else None),
        )
    )
    if not reachable:
        raise InvalidState(
            f"the volume's storage pool is not attached to the cluster of VM {vm.name!r}'s host",
            vm=vm.name,
            pool_id=vol.pool_id,
        )
    if vol.host_id is not None and vol.host_id != vm.host_id:
        raise InvalidState(
            f"volume {vol.name!r} lives on another host (local pool)",
            volume_host_id=vol.host_id,
            vm_host_id=vm.host_id,
        )
    used = set(
        await s.scalars(
            select(VolumeAttachmentRow.device).where(VolumeAttachmentRow.vm_id == vm.id)
        )
    )
    free = [d for d in DEVICES if d not in used]
    if not free:
        raise InvalidState(f"VM {vm.name!r} has {len(DEVICES)} data volumes already", vm=vm.name)
    allowed = {VolumeStatus.available} | ({VolumeStatus.in_use} if vol.shareable else set())
    await claim_status(s, vol, allowed, VolumeStatus.attaching, "attach")
    s.add(VolumeAttachmentRow(volume_id=vol.id, vm_id=vm.id, device=free[0]))
    try:
        await s.flush()
    except IntegrityError as exc:
        raise InvalidState("the VM's device list changed meanwhile: retry", vm=vm.name) from exc
    return _op(
        svc,
        s,
        VOLUME_ATTACH.type,
        vol.id,
        vol.project_id,
        caller,
        lock_key=f"vm:{vm.id}",
        params={
            "volume_id": vol.id,
            "vm_id": vm.id,
            "host_id": vm.host_id,
            "device": free[0],
            "instantiate": not vol.instantiated,
        },
    )


async def detach(
    *,
    svc: Services,
    ref: str,
    caller: Caller,
    vm_ref: str | None = None,
    timeout: float = 30.0,
    if_match: str | None = None,
) -> Operation:
    """Detach the volume from its VM (``vm_ref`` required when a shareable volume has several)."""
    async with svc.sessionmaker() as s:
        vol = await _visible_volume(s, ref, caller, "volume:update", if_match)
        refuse_root(vol, "detached")
        attached = (await attachments_of(s, [vol.id]))[vol.id]
        if not attached:
            raise InvalidState(f"volume {vol.name!r} is not attached", volume=vol.name)
        if vm_ref is not None:
            vm = await get_row(s, VmRow, vm_ref, "vm", where=visible(caller, VmRow, "vm"))
            if vm.id not in {v for v, _ in attached}:
                raise InvalidState(f"volume {vol.name!r} is not attached to VM {vm.name!r}")
        elif len(attached) > 1:
            raise InvalidInput(
                "the volume is attached to several VMs: say which (vm)",
                vms=[v for v, _ in attached],
            )
        else:
            vm = await get_row(s, VmRow, attached[0][0], "vm")
        require(caller, "vm:update", vm.project_id)
        if VmStatus(vm.status) not in ATTACHABLE_VM:
            raise InvalidState(
                f"cannot detach from VM {vm.name!r}: it is {vm.status}",
                vm=vm.name,
                status=vm.status,
            )
        await claim_status(s, vol, {VolumeStatus.in_use}, VolumeStatus.detaching, "detach")
        op = _op(
            svc,
            s,
            VOLUME_DETACH.type,
            vol.id,
            vol.project_id,
            caller,
            lock_key=f"vm:{vm.id}",
            params={
                "volume_id": vol.id,
                "vm_id": vm.id,
                "host_id": vm.host_id,
                "timeout": timeout,
            },
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def resize(
    *, svc: Services, ref: str, spec: VolumeResize, caller: Caller, if_match: str | None = None
) -> Operation:
    """Grow the volume to ``spec.size_gb`` (``InvalidInput`` for a shrink or the same size),
    charging quota and pool now; live when its VM runs (``volume.resize``), a record change
    while the volume does not exist on its pool yet."""
    async with svc.sessionmaker() as s:
        vol = await _visible_volume(s, ref, caller, "volume:update", if_match)
        if spec.size_gb <= vol.size_gb:
            raise InvalidInput(
                f"volumes only grow: {vol.name!r} has {vol.size_gb} GiB",
                size_gb=vol.size_gb,
                requested_gb=spec.size_gb,
            )
        attached = (await attachments_of(s, [vol.id]))[vol.id]
        if len(attached) > 1:
            raise InvalidState("detach the volume from all but one VM to grow it", volume=vol.name)
        pool = await s.get(StoragePoolRow, vol.pool_id)
        assert pool is not None  # foreign key
        lun = lun_sizes(pool).get(vol.pool_name) if pool.type == "iscsi" else None
        if pool.type == "iscsi" and (lun is None or spec.size_gb * GIB > lun):
            raise InvalidInput(
                f"volume {vol.name!r} is a LUN of {(lun or 0) / GIB:.2f} GiB: it cannot grow"
                " past it (the storage admin grows LUNs)",
                reason="lun_size",
                lun_gb=round((lun or 0) / GIB, 2),
                requested_gb=spec.size_gb,
            )
        delta = spec.size_gb - vol.size_gb
        check_room(pool, delta)
        old = vol.size_gb
        await claim_status(
            s, vol, {VolumeStatus.available, VolumeStatus.in_use}, VolumeStatus.resizing, "resize"
        )
        await quotas.adjust(s, vol.project_id, volume_gb=delta)
        pool.allocated_gb += delta
        await s.execute(
            update(VolumeRow).where(VolumeRow.id == vol.id).values(size_gb=spec.size_gb)
        )
        if vol.role == VolumeRole.root:  # the VM's disk size is its root volume's
            await s.execute(
                update(VmRow).where(VmRow.root_volume_id == vol.id).values(disk_gb=spec.size_gb)
            )
        if not vol.instantiated or pool.type == "iscsi":  # a LUN is as big as it is already
            await settle_status(s, vol.id)
            op = _op(svc, s, VOLUME_RESIZE.type, vol.id, vol.project_id, caller)
            await s.commit()
            return op_model(op)
        vm_id = attached[0][0] if attached else None
        if vm_id is not None:
            host_id = await s.scalar(select(VmRow.host_id).where(VmRow.id == vm_id))
        else:
            host_id = await pool_host(s, pool.id, vol)
        op = _op(
            svc,
            s,
            VOLUME_RESIZE.type,
            vol.id,
            vol.project_id,
            caller,
            lock_key=f"vm:{vm_id}" if vm_id else f"volume:{vol.id}",
            params={
                "volume_id": vol.id,
                "size_gb": spec.size_gb,
                "old_size_gb": old,
                "host_id": host_id,
                "vm_id": vm_id,
            },
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def delete(
    *,
    svc: Services,
    ref: str,
    caller: Caller,
    if_match: str | None = None,
    expunge: bool = False,
) -> Operation:
    """Delete a volume that no VM uses (``InUse`` with the VMs otherwise): an ``available``
    one goes to the recycle bin under the ``delayed`` and ``never`` policies (unless
    ``expunge``); else at once if it was never created on its pool, or through
    ``volume.delete``. A volume in ``error`` may be deleted (that is how a failed operation's
    leftovers are cleaned up)."""
    async with svc.sessionmaker() as s:
        vol = await _visible_volume(s, ref, caller, "volume:delete", if_match)
        refuse_root(vol, "deleted")
        attached = (await attachments_of(s, [vol.id]))[vol.id]
        if attached:
            raise InUse(
                f"volume {vol.name!r} is attached: detach it first",
                vms=[v for v, _ in attached],
            )
        snap_ids = await s.scalars(select(SnapshotRow.id).where(SnapshotRow.volume_id == vol.id))
        if clones := await clones_of(s, list(snap_ids)):
            raise InUse(
                f"volume {vol.name!r} has snapshots with copy-on-write clones: volume(s)"
                f" {', '.join(clones)}; delete them first",
                volumes=clones,
            )
        if vol.status == VolumeStatus.available and await recycles(svc, s, KIND, expunge):
            await claim_status(s, vol, {VolumeStatus.available}, VolumeStatus.recycled, "delete")
            await to_bin(svc, s, KIND, vol, deleted_by=caller.user_id)
            op = _op(svc, s, "volume.recycle", vol.id, vol.project_id, caller)
            await s.commit()
            return op_model(op)
        if not vol.instantiated:
            await claim_status(
                s,
                vol,
                {VolumeStatus.available, VolumeStatus.error},
                VolumeStatus.deleting,
                "delete",
            )
            await forget_volume(s, vol)
            op = _op(svc, s, VOLUME_DELETE.type, vol.id, vol.project_id, caller)
            await s.commit()
            return op_model(op)
        host_id = await pool_host(s, vol.pool_id, vol)
        await claim_status(
            s, vol, {VolumeStatus.available, VolumeStatus.error}, VolumeStatus.deleting, "delete"
        )
        op = _op(
            svc,
            s,
            VOLUME_DELETE.type,
            vol.id,
            vol.project_id,
            caller,
            lock_key=f"volume:{vol.id}",
            params={"volume_id": vol.id, "host_id": host_id},
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def expunge_volume(
    svc: Services, s: AsyncSession, vol: VolumeRow, user_id: str | None
) -> OperationRow:
    """The delete of a volume leaving the bin, in ``s`` (the caller commits, and launches the
    operation when it is queued): at once if it was never created on its pool, else
    ``volume.delete`` (a failure leaves it in ``error``, out of the bin)."""
    vol.status = VolumeStatus.deleting.value
    if not vol.instantiated:
        await forget_volume(s, vol)
        return svc.runner.create(
            s,
            type=VOLUME_DELETE.type,
            target_type=KIND,
            target_id=vol.id,
            done=True,
            project_id=vol.project_id,
            user_id=user_id,
        )
    host_id = await pool_host(s, vol.pool_id, vol)
    return svc.runner.create(
        s,
        type=VOLUME_DELETE.type,
        target_type=KIND,
        target_id=vol.id,
        lock_key=f"volume:{vol.id}",
        params={"volume_id": vol.id, "host_id": host_id},
        project_id=vol.project_id,
        user_id=user_id,
    )


async def move(
    *, svc: Services, ref: str, spec: VolumeMove, caller: Caller, if_match: str | None = None
) -> Operation:
    """Move a detached volume (``available``) with no snapshots to another enabled pool with
    room: ``volume.move`` (copy, switch, delete the old copy) through a host that reaches both
    pools (``NoHostAvailable`` otherwise; a local volume's own host), or a record change for a
    volume not created on its pool yet. ``InvalidState``, ``InvalidInput`` (same pool),
    ``PoolFull``; nothing changes on a 4xx."""
    async with svc.sessionmaker() as s:
        vol = await _visible_volume(s, ref, caller, "volume:update", if_match)
        refuse_root(vol, "moved")
        source = await s.get(StoragePoolRow, vol.pool_id)
        target = await get_row(s, StoragePoolRow, spec.pool, "storage_pool")
        assert source is not None  # foreign key
        if target.id == source.id:
            raise InvalidInput(f"volume {vol.name!r} is on pool {target.name!r} already")
        if target.state != "enabled":
            raise InvalidState(
                f"pool {target.name!r} is {target.state}", pool=target.name, state=target.state
            )
        n = await s.scalar(
            select(func.count()).select_from(SnapshotRow).where(SnapshotRow.volume_id == vol.id)
        )
        if n:
            raise InvalidState(
                f"volume {vol.name!r} has {n} snapshot(s): delete them first (a move copies the"
                " current data only)",
                snapshots=n,
            )
        check_room(target, vol.size_gb)
        await claim_status(s, vol, {VolumeStatus.available}, VolumeStatus.moving, "move")
        name, fmt = await place_on(s, target, vol.id, vol.size_gb, vol.shareable)
        if not vol.instantiated:
            target.allocated_gb += vol.size_gb
            source.allocated_gb = max(0.0, source.allocated_gb - vol.size_gb)
            await s.execute(
                update(VolumeRow)
                .where(VolumeRow.id == vol.id)
                .values(pool_id=target.id, pool_name=name, format=fmt, status="available")
            )
            op = _op(svc, s, VOLUME_MOVE.type, vol.id, vol.project_id, caller)
            await s.commit()
            return op_model(op)
        source_host = await pool_host(s, source.id, vol)
        host_id = await _mover(s, source, target, vol, source_host)
        target.allocated_gb += vol.size_gb
        op = _op(
            svc,
            s,
            VOLUME_MOVE.type,
            vol.id,
            vol.project_id,
            caller,
            lock_key=f"volume:{vol.id}",
            params={
                "volume_id": vol.id,
                "host_id": host_id,
                "source": {
                    "pool_id": source.id,
                    "name": vol.pool_name,
                    "format": vol.format,
                    "host_id": source_host,
                },
                "target": {
                    "pool_id": target.id,
                    "name": name,
                    "format": fmt,
                    "host_id": host_id if target.type == "local" else None,
                },
            },
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def _mover(
    s: AsyncSession,
    source: StoragePoolRow,
    target: StoragePoolRow,
    vol: VolumeRow,
    source_host: str,
) -> str:
    """A connected host that reaches both pools (reports ``ok``): a local volume's own host,
    else the host acting on the source if it reaches the target, else any that reaches both."""
    reach = select(StoragePoolHostRow.host_id).where(
        StoragePoolHostRow.pool_id == target.id, StoragePoolHostRow.ok.is_(True)
    )
    targets = set(await s.scalars(reach))
    if source_host in targets:
        return source_host
    if source.type != "local":
        both = set(
            await s.scalars(
                select(StoragePoolHostRow.host_id).where(
                    StoragePoolHostRow.pool_id == source.id,
                    StoragePoolHostRow.ok.is_(True),
                    StoragePoolHostRow.host_id.in_(sorted(targets)),
                )
            )
        )
        if both:
            return sorted(both)[0]
    raise NoHostAvailable(
        f"no host reaches both pool {source.name!r} and pool {target.name!r}",
        source_pool=source.name,
        target_pool=target.name,
    )


async def _from_snapshot(
    svc: Services, spec: VolumeCreate, project_id: str, caller: Caller
) -> Operation:
    """A volume made at once from ``spec.snapshot`` (``volume.clone``): the snapshot must be
    ``ready`` and on ``spec.pool`` (``InvalidInput`` otherwise), no smaller than it."""
    from corral.server.services.snapshots import visible_snapshots
    from corral.server.workflows.volume_clone import VOLUME_CLONE

    assert spec.snapshot is not None
    async with svc.sessionmaker() as s:
        snap = await get_row(
            s, SnapshotRow, spec.snapshot, "snapshot", where=visible_snapshots(caller)
        )
        require(caller, "snapshot:get", snap.project_id)
        source = await s.get(VolumeRow, snap.volume_id)
        pool = await get_row(s, StoragePoolRow, spec.pool, "storage_pool")
        assert source is not None  # foreign key
        if snap.status != "ready":
            raise InvalidState(f"snapshot {snap.name!r} is {snap.status}", snapshot=snap.name)
        if source.pool_id != pool.id:
            raise InvalidInput(
                f"snapshot {snap.name!r} is on another pool: a volume made from it goes on the"
                " same pool",
                snapshot=snap.name,
            )
        if spec.size_gb < snap.size_gb:
            raise InvalidInput(
                f"volume size {spec.size_gb} GiB is smaller than snapshot {snap.name!r}"
                f" ({snap.size_gb} GiB)",
                size_gb=spec.size_gb,
                min_size_gb=snap.size_gb,
            )
        host_id = await pool_host(s, pool.id, source)
        vol = await _record(s, pool, spec, project_id, caller, VolumeStatus.cloning)
        if pool.type == "rbd":  # a Ceph clone: it holds its snapshot
            vol.parent_snapshot_id = snap.id
        op = _op(
            svc,
            s,
            VOLUME_CLONE.type,
            vol.id,
            project_id,
            caller,
            lock_key=f"volume:{source.id}",
            params={"volume_id": vol.id, "snapshot_id": snap.id, "host_id": host_id},
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def clones_of(s: AsyncSession, snapshot_ids: Sequence[str]) -> list[str]:
    """The names of the volumes that are Ceph clones of any of ``snapshot_ids``."""
    if not snapshot_ids:
        return []
    return list(
        await s.scalars(
            select(VolumeRow.name)
            .where(VolumeRow.parent_snapshot_id.in_(list(snapshot_ids)))
            .order_by(VolumeRow.name)
        )
    )
