"""Snapshots of data volumes: take, list (the tree), rename, revert, delete by merging.

Each request checks, records and moves the volume to ``snapshotting`` / ``reverting`` (a
conditional status change, so it cannot race an attach, a detach or another snapshot), then the
workflow does the host work. Supported on file pools (local, nfs); rbd pools will use Ceph's own
snapshots.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InUse, InvalidInput, InvalidState, NameTaken
from corral.api.operations import Operation
from corral.api.snapshots import (
    MAX_CHAIN,
    Snapshot,
    SnapshotCreate,
    SnapshotKind,
    SnapshotStatus,
    SnapshotUpdate,
)
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import SnapshotRow, StoragePoolRow, VmRow, VolumeRow
from corral.server.db.types import new_id
from corral.server.identity import quotas
from corral.server.identity.access import check_if_match, require, visible
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.volumes import (
    attachments_of,
    claim_status,
    clones_of,
    visible_volumes,
)
from corral.server.workflows.snapshot_common import CEPH_POOLS, active_chain, backings
from corral.server.workflows.snapshot_create import SNAPSHOT_CREATE
from corral.server.workflows.snapshot_delete import SNAPSHOT_DELETE
from corral.server.workflows.snapshot_revert import SNAPSHOT_REVERT
from corral.server.workflows.volume_common import pool_host

KIND = "snapshot"
FILE_POOLS = frozenset({"local", "nfs"})
"""Pools whose snapshots are external qcow2 files (the others: ``CEPH_POOLS``)."""

STOPPED = frozenset({"stopped", "crashed", "absent"})


def to_model(r: SnapshotRow, current: bool = False) -> Snapshot:
    """The contract model of a snapshot row; ``current`` is computed by the caller (the
    volume's ``current_snapshot_id``), ``used_bytes`` is the row's as the workflows measured
    it (None: not measured)."""
    return Snapshot(
        id=r.id,
        name=r.name,
        volume_id=r.volume_id,
        parent_id=r.parent_id,
        current=current,
        status=SnapshotStatus(r.status),
        kind=SnapshotKind(r.kind),
        vm_snapshot_id=r.vm_snapshot_id,
        size_gb=r.size_gb,
        used_bytes=r.used_bytes,
        description=r.description,
        error=r.error,
        created_at=r.created_at,
        updated_at=r.updated_at,
        project_id=r.project_id,
        owner_id=r.owner_id,
        shared=r.shared,
    )


class SnapshotsKind(Kind[SnapshotRow, Snapshot]):
    """Snapshots with ``current`` (one query for the page's volumes) and their ``used_bytes``
    (a column of the row)."""

    async def models(self, s: AsyncSession, rows: list[SnapshotRow]) -> list[Snapshot]:
        vids = sorted({r.volume_id for r in rows})
        current: set[str | None] = set()
        if vids:
            current = set(
                await s.scalars(select(VolumeRow.current_snapshot_id).where(VolumeRow.id.in_(vids)))
            )
        return [to_model(r, r.id in current) for r in rows]


SNAPSHOTS = SnapshotsKind(KIND, SnapshotRow, to_model, specs.SNAPSHOTS, Snapshot)


def visible_snapshots(caller: Caller) -> ColumnElement[bool]:
    """The snapshots ``caller`` sees (not those of volumes in the recycle bin)."""
    recycled = select(VolumeRow.id).where(VolumeRow.status == VolumeStatus.recycled.value)
    return and_(visible(caller, SnapshotRow, KIND), SnapshotRow.volume_id.not_in(recycled))


async def _context(s: AsyncSession, vol: VolumeRow) -> tuple[str | None, str, str | None]:
    """(the VM using the volume or None, the host to act on, the VM's power state)."""
    attached = (await attachments_of(s, [vol.id]))[vol.id]
    if len(attached) > 1:
        raise InvalidState(
            "the volume is attached to several VMs: detach it from all but one",
            volume=vol.name,
            vms=[v for v, _ in attached],
        )
    if attached:
        vm = await s.get(VmRow, attached[0][0])
        assert vm is not None and vm.host_id is not None  # attachments only on placed VMs
        return vm.id, vm.host_id, vm.power_state
    return None, await pool_host(s, vol.pool_id, vol), None


async def _usable_volume(
    s: AsyncSession, ref: str, caller: Caller, permission: str
) -> tuple[VolumeRow, StoragePoolRow]:
    vol = await get_row(s, VolumeRow, ref, "volume", where=visible_volumes(caller))
    require(caller, permission, vol.project_id)
    pool = await s.get(StoragePoolRow, vol.pool_id)
    assert pool is not None  # foreign key
    if pool.type not in FILE_POOLS | CEPH_POOLS:
        raise InvalidState(
            f"snapshots of {pool.type} volumes are not supported yet",
            volume=vol.name,
            pool_type=pool.type,
        )
    if not vol.instantiated:
        raise InvalidState(
            f"volume {vol.name!r} holds no data yet (it is created on its pool at its first"
            " attach)",
            volume=vol.name,
        )
    return vol, pool


async def _offline_only(s: AsyncSession, vol: VolumeRow, power: str | None, verb: str) -> None:
    """``InvalidState`` for a volume of an nfs pool whose VM runs: QEMU's userspace NFS disks
    take no live external snapshot or block pull here (stop the VM first)."""
    pool = await s.get(StoragePoolRow, vol.pool_id)
    if pool is not None and pool.type == "nfs" and power is not None and power not in STOPPED:
        raise InvalidState(
            f"cannot {verb} an nfs volume while its VM runs: stop the VM first",
            volume=vol.name,
            pool_type="nfs",
            power_state=power,
        )


def new_file(vol: VolumeRow) -> str:
    """A new active file name for the volume, next to its others."""
    stem = f"vol-{vol.id}"
    return f"{stem}-{secrets.token_hex(4)}.qcow2"


async def create_snapshot(
    *, svc: Services, volume_ref: str, spec: SnapshotCreate, caller: Caller
) -> Operation:
    """Record a snapshot of the volume (``creating``) and queue ``snapshot.create``.
    ``InvalidState`` if the volume is busy, not created yet, on an unsupported pool or its chain
    holds ``MAX_CHAIN`` snapshots (context ``reason=chain_full``); ``QuotaExceeded``."""
    async with svc.sessionmaker() as s:
        vol, _ = await _usable_volume(s, volume_ref, caller, "snapshot:create")
        op = await take(svc, s, vol, spec, user_id=caller.user_id, kind=SnapshotKind.manual)
        await _commit(s, spec.name)
    svc.runner.launch(op)
    return op_model(op)


async def chain_length(s: AsyncSession, vol: VolumeRow, pool_type: str = "local") -> int:
    """How many snapshot files lie under the volume's active file (a Ceph pool: how many
    snapshots the image has)."""
    files = await backings(s, vol.id)
    return len(files) if pool_type in CEPH_POOLS else len(active_chain(vol, files))


async def check_new_node(s: AsyncSession, vol: VolumeRow, pool_type: str, name: str) -> None:
    """Whether the volume can take a snapshot ``name``: ``InvalidState`` (``reason=chain_full``)
    when its chain holds ``MAX_CHAIN`` snapshots, ``NameTaken`` when it has one of that name."""
    chain = await chain_length(s, vol, pool_type)
    if chain >= MAX_CHAIN:
        raise InvalidState(
            f"volume {vol.name!r} has {chain} snapshots in its chain (at most"
            f" {MAX_CHAIN}): delete some first",
            volume=vol.name,
            reason="chain_full",
            limit=MAX_CHAIN,
        )
    if await s.scalar(
        select(SnapshotRow.id).where(SnapshotRow.volume_id == vol.id, SnapshotRow.name == name)
    ):
        raise NameTaken(f"volume {vol.name!r} has a snapshot {name!r}", name=name)


def new_node(
    vol: VolumeRow,
    name: str,
    description: str,
    *,
    ceph: bool,
    owner_id: str | None,
    kind: SnapshotKind = SnapshotKind.manual,
    vm_snapshot_id: str | None = None,
) -> SnapshotRow:
    """A new node of the volume's tree (``creating``, not added to a session) taken of its
    present content: the frozen file is its active file (on rbd: the Ceph snapshot
    ``snap-<id>``), its parent the volume's current snapshot."""
    snap_id = new_id()
    return SnapshotRow(
        id=snap_id,
        name=name,
        description=description,
        project_id=vol.project_id,
        owner_id=owner_id,
        volume_id=vol.id,
        parent_id=vol.current_snapshot_id,
        file=f"snap-{snap_id}" if ceph else vol.pool_name,
        backing=None if ceph else vol.backing_name,
        size_gb=vol.size_gb,
        status=SnapshotStatus.creating.value,
        kind=kind.value,
        vm_snapshot_id=vm_snapshot_id,
    )


async def take(
    svc: Services,
    s: AsyncSession,
    vol: VolumeRow,
    spec: SnapshotCreate,
    *,
    user_id: str | None,
    kind: SnapshotKind,
) -> Any:
    """In the caller's transaction: check, record the snapshot, claim the volume and add the
    ``snapshot.create`` operation (to be launched after the commit). On an rbd pool the
    snapshot is Ceph's (``file`` is its name, no overlay; ``quiesce`` is refused)."""
    pool = await s.get(StoragePoolRow, vol.pool_id)
    ceph = pool is not None and pool.type in CEPH_POOLS
    if ceph and spec.quiesce:
        raise InvalidInput(
            "quiesced snapshots are not available on rbd pools (Ceph snapshots are crash"
            " consistent)",
            volume=vol.name,
        )
    await check_new_node(s, vol, pool.type if pool is not None else "local", spec.name)
    vm_id, host_id, power = await _context(s, vol)
    await _offline_only(s, vol, power, "take a snapshot of")
    await claim_status(
        s,
        vol,
        {VolumeStatus.available, VolumeStatus.in_use},
        VolumeStatus.snapshotting,
        "snapshot",
    )
    await quotas.adjust(s, vol.project_id, snapshots=1)
    snap = new_node(vol, spec.name, spec.description, ceph=ceph, owner_id=user_id, kind=kind)
    s.add(snap)
    params = {
        "snapshot_id": snap.id,
        "volume_id": vol.id,
        "vm_id": vm_id,
        "host_id": host_id,
        "old_active": vol.pool_name,
        "new_name": None if ceph else new_file(vol),
        "quiesce": spec.quiesce,
        "ceph": ceph,
    }
    return _op(svc, s, SNAPSHOT_CREATE.type, snap.id, vol, user_id, vm_id, params)


def _op(
    svc: Services,
    s: AsyncSession,
    type: str,
    snapshot_id: str,
    vol: VolumeRow,
    user_id: str | None,
    vm_id: str | None,
    params: dict[str, Any],
) -> Any:
    return svc.runner.create(
        s,
        type=type,
        target_type=KIND,
        target_id=snapshot_id,
        lock_key=f"vm:{vm_id}" if vm_id else f"volume:{vol.id}",
        project_id=vol.project_id,
        user_id=user_id,
        params=params,
    )


async def _commit(s: AsyncSession, name: str) -> None:
    try:
        await s.commit()
    except IntegrityError as exc:
        raise NameTaken(f"a snapshot named {name!r} exists already", name=name) from exc


async def _visible_snapshot(
    s: AsyncSession, ref: str, caller: Caller, permission: str, if_match: str | None
) -> SnapshotRow:
    snap = await get_row(s, SnapshotRow, ref, KIND, where=visible_snapshots(caller))
    require(caller, permission, snap.project_id)
    check_if_match(if_match, snap.id, snap.updated_at)
    return snap


async def update_snapshot(
    *, svc: Services, ref: str, spec: SnapshotUpdate, caller: Caller, if_match: str | None = None
) -> Operation:
    async with svc.sessionmaker() as s:
        snap = await _visible_snapshot(s, ref, caller, "snapshot:update", if_match)
        if spec.name is not None:
            snap.name = spec.name
        if spec.description is not None:
            snap.description = spec.description
        op = svc.runner.create(
            s,
            type="snapshot.update",
            target_type=KIND,
            target_id=snap.id,
            project_id=snap.project_id,
            user_id=caller.user_id,
            done=True,
        )
        await _commit(s, spec.name or snap.name)
    return op_model(op)


async def revert(
    *, svc: Services, ref: str, caller: Caller, if_match: str | None = None
) -> Operation:
    """Start a new branch from the snapshot: the volume's VM must be stopped (``InvalidState``
    otherwise); what was written since the last snapshot is discarded."""
    async with svc.sessionmaker() as s:
        snap = await _visible_snapshot(s, ref, caller, "snapshot:update", if_match)
        if snap.status != SnapshotStatus.ready:
            raise InvalidState(f"snapshot {snap.name!r} is {snap.status}", status=snap.status)
        vol, _ = await _usable_volume(s, snap.volume_id, caller, "volume:update")
        vm_id, host_id, power = await _context(s, vol)
        if vm_id is not None and power not in STOPPED:
            raise InvalidState(
                "stop the VM before reverting its volume", vm_id=vm_id, power_state=power
            )
        await claim_status(
            s,
            vol,
            {VolumeStatus.available, VolumeStatus.in_use},
            VolumeStatus.reverting,
            "revert",
        )
        snap.status = SnapshotStatus.reverting.value
        params = {
            "snapshot_id": snap.id,
            "volume_id": vol.id,
            "vm_id": vm_id,
            "host_id": host_id,
            "old_active": vol.pool_name,
            "new_name": new_file(vol),
        }
        op = _op(svc, s, SNAPSHOT_REVERT.type, snap.id, vol, caller.user_id, vm_id, params)
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def delete(
    *, svc: Services, ref: str, caller: Caller, if_match: str | None = None
) -> Operation:
    """Delete the snapshot by merging its data into its children (``snapshot.delete``). A
    snapshot whose creation outcome is unknown (its file is still the volume's active file)
    cannot be deleted this way (``InvalidState``)."""
    async with svc.sessionmaker() as s:
        snap = await _visible_snapshot(s, ref, caller, "snapshot:delete", if_match)
        if snap.vm_snapshot_id is not None:
            raise InvalidState(
                f"snapshot {snap.name!r} is part of a whole-VM snapshot: delete that one"
                " (DELETE /vms/{vm}/snapshots/{ref})",
                reason="vm_snapshot",
                vm_snapshot_id=snap.vm_snapshot_id,
            )
        if snap.status not in (SnapshotStatus.ready, SnapshotStatus.error):
            raise InvalidState(f"snapshot {snap.name!r} is {snap.status}", status=snap.status)
        vol, _ = await _usable_volume(s, snap.volume_id, caller, "volume:update")
        if clones := await clones_of(s, [snap.id]):
            raise InUse(
                f"snapshot {snap.name!r} has copy-on-write clones: volume(s)"
                f" {', '.join(clones)}; delete them first",
                volumes=clones,
            )
        op = await merge(svc, s, vol, snap, user_id=caller.user_id)
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def merge(
    svc: Services, s: AsyncSession, vol: VolumeRow, snap: SnapshotRow, *, user_id: str | None
) -> Any:
    """In the caller's transaction: claim the volume and add the ``snapshot.delete`` operation
    (to be launched after the commit)."""
    if snap.file == vol.pool_name:
        raise InvalidInput(
            "this snapshot's creation did not finish: its file is the volume's active file",
            snapshot=snap.name,
        )
    vm_id, host_id, power = await _context(s, vol)
    await _offline_only(s, vol, power, "merge a snapshot of")
    await claim_status(
        s,
        vol,
        {VolumeStatus.available, VolumeStatus.in_use},
        VolumeStatus.snapshotting,
        "delete a snapshot of",
    )
    snap.status = SnapshotStatus.deleting.value
    params = {"snapshot_id": snap.id, "volume_id": vol.id, "vm_id": vm_id, "host_id": host_id}
    return _op(svc, s, SNAPSHOT_DELETE.type, snap.id, vol, user_id, vm_id, params)
