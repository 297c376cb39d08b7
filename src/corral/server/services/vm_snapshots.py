"""Whole-VM snapshots (``corral.api.vm_snapshots``): take, list, revert, delete.

Each request checks everything, records what it changes and claims the VM's volumes
(``snapshotting`` / ``reverting``: conditional status changes, so nothing else acts on them
meanwhile) in one transaction, then a workflow does the host work: ``vm.snapshot`` (one agent
task for all disks), ``vm.snapshot.revert``, ``vm.snapshot.delete`` (the nodes merged one by
one through ``snapshot.delete``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InUse, InvalidInput, InvalidState, NameTaken
from corral.api.operations import Operation
from corral.api.snapshots import SnapshotStatus
from corral.api.vm_snapshots import (
    VmSnapshot,
    VmSnapshotCreate,
    VmSnapshotList,
    VmSnapshotStatus,
)
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import (
    SnapshotRow,
    StoragePoolRow,
    VmRow,
    VmSnapshotRow,
    VolumeAttachmentRow,
    VolumeRow,
)
from corral.server.db.types import new_id
from corral.server.identity import quotas
from corral.server.identity.access import require, visible
from corral.server.identity.caller import Caller
from corral.server.services.context import Services
from corral.server.services.listing import get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.snapshots import (
    FILE_POOLS,
    STOPPED,
    check_new_node,
    new_file,
    new_node,
)
from corral.server.services.vms import visible_vms
from corral.server.services.volumes import claim_status, clones_of
from corral.server.workflows.snapshot_common import CEPH_POOLS, LIVE
from corral.server.workflows.vm_snapshot_create import VM_SNAPSHOT_CREATE
from corral.server.workflows.vm_snapshot_delete import VM_SNAPSHOT_DELETE
from corral.server.workflows.vm_snapshot_revert import VM_SNAPSHOT_REVERT

KIND = "vm_snapshot"
_BUSY = {VolumeStatus.in_use}


def to_model(r: VmSnapshotRow, members: list[str]) -> VmSnapshot:
    return VmSnapshot(
        id=r.id,
        name=r.name,
        vm_id=r.vm_id,
        status=VmSnapshotStatus(r.status),
        memory=r.memory,
        quiesced=r.quiesced,
        snapshots=members,
        description=r.description,
        error=r.error,
        created_at=r.created_at,
        updated_at=r.updated_at,
        project_id=r.project_id,
        owner_id=r.owner_id,
        shared=r.shared,
    )


async def _vm(s: AsyncSession, ref: str, caller: Caller, permission: str) -> VmRow:
    vm = await get_row(s, VmRow, ref, "vm", where=visible_vms(caller))
    require(caller, permission, vm.project_id)
    return vm


async def _members(s: AsyncSession, snapshot_ids: list[str]) -> dict[str, list[str]]:
    """The member snapshot ids of each VM snapshot, in the volumes' device order."""
    found: dict[str, list[str]] = {i: [] for i in snapshot_ids}
    if not snapshot_ids:
        return found
    rows = await s.execute(
        select(SnapshotRow.vm_snapshot_id, SnapshotRow.id)
        .join(
            VolumeAttachmentRow,
            VolumeAttachmentRow.volume_id == SnapshotRow.volume_id,
            isouter=True,
        )
        .where(SnapshotRow.vm_snapshot_id.in_(snapshot_ids))
        .order_by(VolumeAttachmentRow.device, SnapshotRow.id)
    )
    for vsid, sid in rows:
        if vsid is not None and sid not in found[vsid]:
            found[vsid].append(sid)
    return found


async def list_vm_snapshots(*, svc: Services, vm_ref: str, caller: Caller) -> VmSnapshotList:
    async with svc.sessionmaker() as s:
        vm = await _vm(s, vm_ref, caller, "snapshot:list")
        rows = list(
            await s.scalars(
                select(VmSnapshotRow)
                .where(VmSnapshotRow.vm_id == vm.id, visible(caller, VmSnapshotRow, KIND))
                .order_by(VmSnapshotRow.created_at, VmSnapshotRow.id)
            )
        )
        members = await _members(s, [r.id for r in rows])
    return VmSnapshotList(items=[to_model(r, members[r.id]) for r in rows])


async def _row(s: AsyncSession, vm: VmRow, ref: str) -> VmSnapshotRow:
    return await get_row(s, VmSnapshotRow, ref, KIND, where=VmSnapshotRow.vm_id == vm.id)


async def get_vm_snapshot(*, svc: Services, vm_ref: str, ref: str, caller: Caller) -> VmSnapshot:
    async with svc.sessionmaker() as s:
        vm = await _vm(s, vm_ref, caller, "snapshot:get")
        row = await _row(s, vm, ref)
        members = await _members(s, [row.id])
    return to_model(row, members[row.id])


async def _disks(s: AsyncSession, vm: VmRow) -> list[tuple[VolumeRow, StoragePoolRow]]:
    """The VM's volumes (root first, then by device) with their pools."""
    rows = await s.execute(
        select(VolumeRow, StoragePoolRow)
        .join(VolumeAttachmentRow, VolumeAttachmentRow.volume_id == VolumeRow.id)
        .join(StoragePoolRow, StoragePoolRow.id == VolumeRow.pool_id)
        .where(VolumeAttachmentRow.vm_id == vm.id)
        .order_by(VolumeAttachmentRow.device)
    )
    return [(v, p) for v, p in rows]


def _needs_root_volume(vm: VmRow) -> None:
    if vm.root_volume_id is None:
        raise InvalidState(
            f"VM {vm.name!r} has a host-local root disk: whole-VM snapshots need its root"
            " disk on a storage pool (create the VM with root_pool)",
            reason="host_local_root",
            vm=vm.name,
        )


async def snapshot_vm(
    *, svc: Services, vm_ref: str, spec: VmSnapshotCreate, caller: Caller
) -> Operation:
    """Record the VM snapshot and a node per volume (``creating``), claim the volumes and queue
    ``vm.snapshot``. ``InvalidState`` (host-local root disk, a VM or volume busy, a volume not
    snapshottable or its chain full: ``reason=chain_full``, an nfs volume of a running VM),
    ``InvalidInput`` (memory of a VM that does not run), ``NameTaken``, ``QuotaExceeded``;
    nothing changes on a 4xx."""
    async with svc.sessionmaker() as s:
        vm = await _vm(s, vm_ref, caller, "snapshot:create")
        require(caller, "vm:update", vm.project_id)
        _needs_root_volume(vm)
        live = vm.power_state in LIVE
        if vm.status not in ("running", "stopped", "paused"):
            raise InvalidState(f"VM {vm.name!r} is {vm.status}", vm=vm.name, status=vm.status)
        if spec.memory and not live:
            raise InvalidInput(
                f"VM {vm.name!r} does not run: there is no memory state to save",
                vm=vm.name,
                power_state=vm.power_state,
            )
        disks = await _disks(s, vm)
        vsid = new_id()
        row = VmSnapshotRow(
            id=vsid,
            name=spec.name,
            description=spec.description,
            vm_id=vm.id,
            status=VmSnapshotStatus.creating.value,
            memory=spec.memory,
            project_id=vm.project_id,
            owner_id=caller.user_id,
        )
        members = [await _member(s, vm, vol, pool, spec, vsid, caller, live) for vol, pool in disks]
        s.add(row)  # after the checks' queries: a taken name fails at the commit (NameTaken)
        await quotas.adjust(s, vm.project_id, snapshots=len(members))
        op = svc.runner.create(
            s,
            type=VM_SNAPSHOT_CREATE.type,
            target_type=KIND,
            target_id=vsid,
            lock_key=f"vm:{vm.id}",
            project_id=vm.project_id,
            user_id=caller.user_id,
            params={
                "vm_snapshot_id": vsid,
                "vm_id": vm.id,
                "host_id": vm.host_id,
                "members": members,
                "quiesce": spec.quiesce,
                "memory": spec.memory,
            },
        )
        await _commit(s, spec.name)
    svc.runner.launch(op)
    return op_model(op)


async def _member(
    s: AsyncSession,
    vm: VmRow,
    vol: VolumeRow,
    pool: StoragePoolRow,
    spec: VmSnapshotCreate,
    vsid: str,
    caller: Caller,
    live: bool,
) -> dict[str, Any]:
    """Check one volume, record its node, claim it; the workflow's member params."""
    if pool.type not in FILE_POOLS | CEPH_POOLS:
        raise InvalidState(
            f"volume {vol.name!r} is on a {pool.type} pool: it has no snapshots",
            volume=vol.name,
            pool_type=pool.type,
        )
    if pool.type == "nfs" and live:
        raise InvalidState(
            f"volume {vol.name!r} is on an nfs pool: stop VM {vm.name!r} to snapshot it",
            volume=vol.name,
            pool_type="nfs",
        )
    await check_new_node(s, vol, pool.type, spec.name)
    await claim_status(s, vol, _BUSY, VolumeStatus.snapshotting, "snapshot")
    ceph = pool.type in CEPH_POOLS
    node = new_node(
        vol, spec.name, spec.description, ceph=ceph, owner_id=caller.user_id, vm_snapshot_id=vsid
    )
    s.add(node)
    return {
        "snapshot_id": node.id,
        "volume_id": vol.id,
        "old_active": vol.pool_name,
        "new_name": None if ceph else new_file(vol),
        "ceph": ceph,
    }


async def _commit(s: AsyncSession, name: str) -> None:
    try:
        await s.commit()
    except IntegrityError as exc:
        raise NameTaken(f"the VM has a snapshot named {name!r} already", name=name) from exc


async def _ready_members(s: AsyncSession, row: VmSnapshotRow) -> list[SnapshotRow]:
    return list(
        await s.scalars(
            select(SnapshotRow).where(SnapshotRow.vm_snapshot_id == row.id).order_by(SnapshotRow.id)
        )
    )


async def revert(*, svc: Services, vm_ref: str, ref: str, caller: Caller) -> Operation:
    """Queue ``vm.snapshot.revert``: the VM must be stopped, the snapshot ``ready`` (or
    ``error`` after a failed revert: repeating it finishes it) with every node ready and each
    node's volume still attached to the VM; with memory, the VM must be on the host that holds
    the memory file. ``InvalidState`` otherwise; nothing changes on a 4xx."""
    async with svc.sessionmaker() as s:
        vm = await _vm(s, vm_ref, caller, "snapshot:update")
        require(caller, "vm:update", vm.project_id)
        row = await _row(s, vm, ref)
        if row.status not in (VmSnapshotStatus.ready, VmSnapshotStatus.error):
            raise InvalidState(f"VM snapshot {row.name!r} is {row.status}", status=row.status)
        if vm.power_state not in STOPPED or vm.status not in ("stopped", "error"):
            raise InvalidState(
                f"stop VM {vm.name!r} before reverting it",
                vm=vm.name,
                power_state=vm.power_state,
            )
        if row.memory and row.memory_host_id != vm.host_id:
            raise InvalidState(
                f"the memory state of {row.name!r} is on another host than VM {vm.name!r}",
                memory_host_id=row.memory_host_id,
                host_id=vm.host_id,
            )
        attached = set(
            await s.scalars(
                select(VolumeAttachmentRow.volume_id).where(VolumeAttachmentRow.vm_id == vm.id)
            )
        )
        members = []
        for snap in await _ready_members(s, row):
            if snap.status != SnapshotStatus.ready:
                raise InvalidState(
                    f"snapshot {snap.name!r} of the VM snapshot is {snap.status}",
                    snapshot_id=snap.id,
                )
            vol = await s.get(VolumeRow, snap.volume_id)
            assert vol is not None  # nodes go with their volume
            if vol.id not in attached:
                raise InvalidState(
                    f"volume {vol.name!r} of the VM snapshot is not attached to VM"
                    f" {vm.name!r} any more: attach it again first",
                    volume=vol.name,
                )
            pool = await s.get(StoragePoolRow, vol.pool_id)
            assert pool is not None  # foreign key
            await claim_status(s, vol, _BUSY, VolumeStatus.reverting, "revert")
            snap.status = SnapshotStatus.reverting.value
            members.append(
                {
                    "snapshot_id": snap.id,
                    "volume_id": vol.id,
                    "old_active": vol.pool_name,
                    "new_name": new_file(vol),
                    "ceph": pool.type in CEPH_POOLS,
                }
            )
        row.status = VmSnapshotStatus.reverting.value
        op = svc.runner.create(
            s,
            type=VM_SNAPSHOT_REVERT.type,
            target_type=KIND,
            target_id=row.id,
            lock_key=f"vm:{vm.id}",
            project_id=vm.project_id,
            user_id=caller.user_id,
            params={
                "vm_snapshot_id": row.id,
                "vm_id": vm.id,
                "host_id": vm.host_id,
                "members": members,
                "memory": row.memory,
            },
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def delete(*, svc: Services, vm_ref: str, ref: str, caller: Caller) -> Operation:
    """Queue ``vm.snapshot.delete`` (each node merged into its children, the memory file
    removed, the record dropped). ``InvalidState`` while another operation uses it, ``InUse``
    if a node has copy-on-write clones."""
    async with svc.sessionmaker() as s:
        vm = await _vm(s, vm_ref, caller, "snapshot:delete")
        row = await _row(s, vm, ref)
        if row.status not in (VmSnapshotStatus.ready, VmSnapshotStatus.error):
            raise InvalidState(f"VM snapshot {row.name!r} is {row.status}", status=row.status)
        members = await _ready_members(s, row)
        if clones := await clones_of(s, [m.id for m in members]):
            raise InUse(
                f"VM snapshot {row.name!r} has copy-on-write clones: volume(s)"
                f" {', '.join(clones)}; delete them first",
                volumes=clones,
            )
        row.status = VmSnapshotStatus.deleting.value
        op = svc.runner.create(
            s,
            type=VM_SNAPSHOT_DELETE.type,
            target_type=KIND,
            target_id=row.id,
            lock_key=f"vmsnap:{row.id}",  # the merges take the VM's lock one by one
            project_id=vm.project_id,
            user_id=caller.user_id,
            params={"vm_snapshot_id": row.id, "vm_id": vm.id},
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)
