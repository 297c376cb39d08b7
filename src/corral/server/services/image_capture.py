"""Images captured from a VM's root disk, a volume or a snapshot (``POST /images`` with
``source``): the checks of the request and the ``image.capture`` operation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InvalidState
from corral.api.images import ImageSource, ImageStatus
from corral.api.snapshots import SnapshotStatus
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import ImageRow, SnapshotRow, StoragePoolRow, VmRow, VolumeRow
from corral.server.identity.access import require
from corral.server.identity.caller import Caller
from corral.server.services.listing import get_row
from corral.server.services.snapshots import STOPPED, visible_snapshots
from corral.server.services.vms import visible_vms
from corral.server.services.volumes import attachments_of, claim_status, visible_volumes
from corral.server.workflows.volume_common import pool_host

CAPTURE_POOLS = frozenset({"local", "nfs", "rbd", "iscsi"})
"""Pool types whose volumes can be captured (file pools, RBD images, iSCSI LUNs)."""
SNAPSHOT_POOLS = frozenset({"local", "nfs"})


@dataclass(frozen=True)
class CaptureSource:
    """A checked source: ``source_type``/``source_id`` for the image row, ``params`` for the
    ``capture`` step (``host_id`` and ``vm_id`` or ``volume_id`` [+ ``file``])."""

    source_type: str
    source_id: str
    params: dict[str, Any]
    lock_key: str


async def check_source(s: AsyncSession, source: ImageSource, caller: Caller) -> CaptureSource:
    """Resolve ``source`` as ``caller`` sees it; ``InvalidState`` if it cannot be captured now
    (a VM being created or deleted, an attached volume whose VM runs, a volume with no data
    yet, a snapshot that is not ready). A volume or snapshot source moves the volume to ``capturing`` (in ``s``)."""
    if source.vm is not None:
        vm = await get_row(s, VmRow, source.vm, "vm", where=visible_vms(caller))
        require(caller, "vm:get", vm.project_id)
        return vm_source(vm)
    if source.volume is not None:
        vol = await get_row(s, VolumeRow, source.volume, "volume", where=visible_volumes(caller))
        require(caller, "volume:get", vol.project_id)
        await _check_volume(s, vol, frozen=False)
        return await _volume_source(s, vol, "volume", vol.id, None)
    assert source.snapshot is not None  # the model's validator
    snap = await get_row(
        s, SnapshotRow, source.snapshot, "snapshot", where=visible_snapshots(caller)
    )
    require(caller, "snapshot:get", snap.project_id)
    if snap.status != SnapshotStatus.ready:
        raise InvalidState(
            f"snapshot {snap.name!r} is {snap.status}, not ready", snapshot=snap.name
        )
    snap_vol = await s.get(VolumeRow, snap.volume_id)
    assert snap_vol is not None  # foreign key
    await _check_volume(s, snap_vol, frozen=True)
    return await _volume_source(s, snap_vol, "snapshot", snap.id, snap.file)


def vm_source(vm: VmRow, *, live: bool = True) -> CaptureSource:
    """The VM's root disk: ``InvalidState`` unless the VM is placed and stopped (or, with
    ``live``, running or paused: its disk is then copied by a live block copy)."""
    ok = {"stopped", "running", "paused"} if live else {"stopped"}
    if vm.status not in ok or vm.host_id is None or (not live and vm.power_state not in STOPPED):
        need = "stopped, running or paused" if live else "stopped: stop it first"
        raise InvalidState(
            f"VM {vm.name!r} is {vm.status} ({vm.power_state}): it must be {need}",
            vm=vm.name,
            status=vm.status,
            power_state=vm.power_state,
        )
    return CaptureSource(
        source_type="vm",
        source_id=vm.id,
        params={"vm_id": vm.id, "host_id": vm.host_id},
        lock_key=f"vm:{vm.id}",
    )


def new_image(
    name: str, project_id: str | None, owner_id: str | None, src: CaptureSource
) -> ImageRow:
    """The row of an image waiting for its capture (the caller adds and flushes it)."""
    return ImageRow(
        name=name,
        status=ImageStatus.importing,
        source_type=src.source_type,
        source_id=src.source_id,
        project_id=project_id,
        owner_id=owner_id,
    )


async def _check_volume(s: AsyncSession, vol: VolumeRow, *, frozen: bool) -> None:
    """``InvalidState`` unless the volume can be read now: created on its pool, of a pool type
    that can be captured, and (for its active file, ``frozen`` False) not written by a running
    VM. Claims the volume (``capturing``)."""
    pool = await s.get(StoragePoolRow, vol.pool_id)
    assert pool is not None  # foreign key
    types = SNAPSHOT_POOLS if frozen else CAPTURE_POOLS
    if pool.type not in types:
        raise InvalidState(
            f"cannot capture from a {pool.type} pool", volume=vol.name, pool_type=pool.type
        )
    if not vol.instantiated:
        raise InvalidState(
            f"volume {vol.name!r} holds no data yet (it is created on its pool at its first"
            " attach)",
            volume=vol.name,
        )
    if not frozen:
        for vm_id, _ in (await attachments_of(s, [vol.id]))[vol.id]:
            vm = await s.get(VmRow, vm_id)
            if vm is not None and vm.power_state not in STOPPED:
                raise InvalidState(
                    f"volume {vol.name!r} is attached to VM {vm.name!r}, which runs: stop it"
                    " or detach the volume (or capture one of its snapshots)",
                    volume=vol.name,
                    vm=vm.name,
                )
    await claim_status(
        s, vol, {VolumeStatus.available, VolumeStatus.in_use}, VolumeStatus.capturing, "capture"
    )


async def _volume_source(
    s: AsyncSession, vol: VolumeRow, source_type: str, source_id: str, file: str | None
) -> CaptureSource:
    attached = (await attachments_of(s, [vol.id]))[vol.id]
    host_id = None
    if attached:
        vm = await s.get(VmRow, attached[0][0])
        host_id = vm.host_id if vm is not None else None
    if host_id is None:
        host_id = await pool_host(s, vol.pool_id, vol)
    return CaptureSource(
        source_type=source_type,
        source_id=source_id,
        params={"volume_id": vol.id, "file": file, "host_id": host_id},
        lock_key=f"volume:{vol.id}",
    )
