"""Deletion policies and the recycle bin (``corral.api.recycle``).

A resource deleted under the ``delayed`` or ``never`` policy keeps its row with the status
``recycled`` (hidden from its lists and lookups: the ``visible_*`` conditions leave it out) and a
name freed for reuse (``<name>.deleted-<id>``); its bin entry keeps the old name, the status a
restore gives back and when it is expunged. ``restore`` puts it back; ``expunge`` (by hand, or
``expunge_due`` when ``expunge_at`` has passed) deletes it for good through the kind's own
delete (``vm.delete``, ``volume.delete``, the image store). Resources in the bin keep what they
hold: disks, host claims, pool allocation and quota.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import CorralError, InvalidState
from corral.api.images import ImageStatus
from corral.api.operations import Operation, OperationStatus
from corral.api.recycle import (
    DeletionPolicies,
    DeletionPolicy,
    KindPolicy,
    RecycleItem,
    RecycleKind,
    RecycleRestore,
)
from corral.api.vms import VmStatus
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import (
    DeletionPolicyRow,
    ImageRow,
    RecycleBinRow,
    VmRow,
    VolumeRow,
)
from corral.server.db.types import utcnow
from corral.server.identity.access import require
from corral.server.identity.caller import Caller
from corral.server.services import pool_images
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import get_row
from corral.server.services.operations import to_model as op_model

log = logging.getLogger(__name__)

KINDS: dict[str, Any] = {"vm": VmRow, "volume": VolumeRow, "image": ImageRow}
RESTORED = {"vm": VmStatus.stopped.value, "volume": VolumeStatus.available.value,
            "image": ImageStatus.ready.value}  # fmt: skip
"""The status a restored resource gets (a VM was stopped when it went to the bin)."""
RECYCLED = "recycled"
TICK_S = 30.0
"""How often ``run_expunges`` looks for entries whose retention has passed."""


def bin_name(name: str, resource_id: str) -> str:
    """The name a resource has in the bin: its own, freed for reuse."""
    return f"{name[:40]}.deleted-{resource_id[:12]}"


async def policy_of(svc: Services, s: AsyncSession, kind: str) -> KindPolicy:
    """The deletion policy of ``kind`` (the server's default without a stored one)."""
    row = await s.get(DeletionPolicyRow, kind)
    if row is None:
        return KindPolicy(
            policy=DeletionPolicy(svc.settings.deletion_policy or "delayed"),
            retention_hours=svc.settings.deletion_retention_hours,
        )
    return KindPolicy(policy=DeletionPolicy(row.policy), retention_hours=row.retention_s / 3600)


async def recycles(svc: Services, s: AsyncSession, kind: str, expunge: bool) -> bool:
    """Whether a delete of ``kind`` goes to the bin: not with ``expunge`` (the caller asked for
    an immediate delete) or the ``immediate`` policy."""
    return not expunge and (await policy_of(svc, s, kind)).policy != DeletionPolicy.immediate


async def get_policies(svc: Services) -> DeletionPolicies:
    async with svc.sessionmaker() as s:
        return DeletionPolicies(**{k: await policy_of(svc, s, k) for k in KINDS})


async def set_policies(svc: Services, spec: DeletionPolicies, caller: Caller) -> Operation:
    """Store every kind's policy (platform admins only: the route checks); a finished
    ``deletion_policy.update`` operation. Entries already in the bin keep their
    ``expunge_at``."""
    async with svc.sessionmaker.begin() as s:
        for kind in KINDS:
            p: KindPolicy = getattr(spec, kind)
            row = await s.get(DeletionPolicyRow, kind)
            if row is None:
                row = DeletionPolicyRow(kind=kind)
                s.add(row)
            row.policy = p.policy.value
            row.retention_s = p.retention_hours * 3600
        op = svc.runner.create(
            s,
            type="deletion_policy.update",
            target_type="deletion_policy",
            target_id=None,
            done=True,
            user_id=caller.user_id,
        )
    return op_model(op)


async def to_bin(
    svc: Services, s: AsyncSession, kind: str, row: Any, *, deleted_by: str | None
) -> str:
    """Move ``row`` (a VM, volume or image) to the bin in ``s``: renamed, ``recycled``, an entry
    recorded with its expunge time. Returns the entry's id."""
    policy = await policy_of(svc, s, kind)
    now = utcnow()
    entry = RecycleBinRow(
        kind=kind,
        resource_id=row.id,
        name=row.name,
        previous_status=row.status,
        project_id=row.project_id,
        owner_id=row.owner_id,
        deleted_by=deleted_by,
        deleted_at=now,
        expunge_at=(
            now + timedelta(hours=policy.retention_hours)
            if policy.policy == DeletionPolicy.delayed
            else None
        ),
    )
    s.add(entry)
    row.name = bin_name(row.name, row.id)
    row.status = RECYCLED
    if root := await _root_volume(s, kind, row):  # hidden and renamed with its VM
        root.name = bin_name(root.name, root.id)
        root.status = RECYCLED
    await s.flush()
    return entry.id


async def _root_volume(s: AsyncSession, kind: str, row: Any) -> VolumeRow | None:
    if kind != "vm" or row.root_volume_id is None:
        return None
    return await s.get(VolumeRow, row.root_volume_id)


def to_item(e: RecycleBinRow) -> RecycleItem:
    return RecycleItem(
        id=e.id,
        kind=e.kind,
        resource_id=e.resource_id,
        name=e.name,
        project_id=e.project_id,
        owner_id=e.owner_id,
        deleted_by=e.deleted_by,
        deleted_at=e.deleted_at,
        expunge_at=e.expunge_at,
    )


def _visible(caller: Caller) -> Any:
    """Entries the caller sees: all for platform admins (of the request's project, if set);
    else, in projects where they hold ``recycle_bin:list``, their own deleted resources, and
    every deleted resource of a kind they may ``see-all``."""
    own = RecycleBinRow.owner_id == caller.user_id
    if caller.is_platform_admin:
        cond: Any = true()
    else:
        conds = [
            RecycleBinRow.project_id.in_(sorted(caller.projects_with("recycle_bin:list"))) & own
        ]
        for kind in KINDS:
            if see_all := caller.projects_with(f"{kind}:see-all"):
                conds.append(
                    (RecycleBinRow.kind == kind) & RecycleBinRow.project_id.in_(sorted(see_all))
                )
        cond = or_(*conds)
    if caller.project_id is not None:
        cond = cond & (RecycleBinRow.project_id == caller.project_id)
    return cond


async def list_bin(svc: Services, caller: Caller, kind: RecycleKind | None) -> list[RecycleItem]:
    """The bin's entries the caller sees, newest first."""
    stmt = select(RecycleBinRow).where(_visible(caller)).order_by(RecycleBinRow.deleted_at.desc())
    if kind is not None:
        stmt = stmt.where(RecycleBinRow.kind == kind)
    async with svc.sessionmaker() as s:
        return [to_item(e) for e in await s.scalars(stmt)]


async def _entry(
    s: AsyncSession, entry_id: str, caller: Caller | None, action: str
) -> RecycleBinRow:
    """The entry if the caller sees it (``NotFound``) and may ``recycle_bin:<action>`` and
    ``<kind>:delete`` in its project (``Forbidden``); ``caller`` None: the system."""
    where = _visible(caller) if caller is not None else None
    entry = await get_row(s, RecycleBinRow, entry_id, "recycle_bin", by_name=False, where=where)
    if caller is not None:
        require(caller, f"recycle_bin:{action}", entry.project_id)
        require(caller, f"{entry.kind}:delete", entry.project_id)
    return entry


async def restore(svc: Services, entry_id: str, spec: RecycleRestore, caller: Caller) -> Operation:
    """Put the resource back under its old name (or ``spec.name``): ``NameTaken`` if that is
    taken now. A VM comes back stopped, a volume available, an image ready."""
    async with svc.sessionmaker() as s:
        entry = await _entry(s, entry_id, caller, "restore")
        table = KINDS[entry.kind]
        row = await s.get(table, entry.resource_id)
        assert row is not None  # the entry goes with the row
        name = spec.name or entry.name
        await ensure_name_free(s, table, name, entry.kind, project_id=row.project_id)
        if root := await _root_volume(s, entry.kind, row):
            root_name = f"{name[:58]}-root"
            await ensure_name_free(s, VolumeRow, root_name, "volume", project_id=row.project_id)
            root.name = root_name
            root.status = VolumeStatus.in_use.value
        row.name = name
        row.status = RESTORED[entry.kind]
        await s.delete(entry)
        op = svc.runner.create(
            s,
            type=f"{entry.kind}.restore",
            target_type=entry.kind,
            target_id=row.id,
            done=True,
            project_id=row.project_id,
            user_id=caller.user_id,
        )
        await s.commit()
    return op_model(op)


async def expunge(svc: Services, entry_id: str, caller: Caller | None) -> Operation:
    """Delete the resource for good (``caller`` None: the retention passed). ``InvalidState``
    under the ``never`` policy. A VM or an instantiated volume is deleted by its workflow (the
    operation returned); a failed delete leaves it out of the bin, in ``error``, to delete
    again."""
    from corral.server.services.images import expunge_image
    from corral.server.services.vms import expunge_vm
    from corral.server.services.volumes import expunge_volume

    user_id = caller.user_id if caller is not None else None
    async with svc.sessionmaker() as s:
        entry = await _entry(s, entry_id, caller, "expunge")
        if (await policy_of(svc, s, entry.kind)).policy == DeletionPolicy.never:
            raise InvalidState(
                f"{entry.kind} {entry.name!r} cannot be expunged: the {entry.kind} deletion"
                " policy is 'never'",
                kind=entry.kind,
            )
        row = await s.get(KINDS[entry.kind], entry.resource_id)
        assert row is not None
        await s.delete(entry)
        match entry.kind:
            case "vm":
                op = await expunge_vm(svc, s, row, user_id)
            case "volume":
                op = await expunge_volume(svc, s, row, user_id)
            case _:
                op = await expunge_image(svc, s, row, user_id)
        await s.commit()
    if op.status == OperationStatus.queued:
        svc.runner.launch(op)
    if entry.kind == "image":
        from corral.server.services.images import drop_file

        drop_file(svc, entry.resource_id)
    return op_model(op)


async def expunge_due(svc: Services) -> int:
    """Expunge every entry whose ``expunge_at`` has passed; returns how many were started.
    One failing is logged and does not stop the others."""
    async with svc.sessionmaker() as s:
        due = list(
            await s.scalars(
                select(RecycleBinRow.id).where(
                    RecycleBinRow.expunge_at.is_not(None), RecycleBinRow.expunge_at <= utcnow()
                )
            )
        )
    started = 0
    for entry_id in due:
        try:
            await expunge(svc, entry_id, None)
            started += 1
        except CorralError as exc:
            log.warning("recycle bin: cannot expunge %s: %s", entry_id, exc)
    return started


async def run_expunges(svc: Services, tick: float = TICK_S) -> None:
    """The background loop of ``expunge_due`` and of ``pool_images.sweep`` (cancelled at
    shutdown)."""
    while True:
        await asyncio.sleep(tick)
        try:
            await expunge_due(svc)
            await pool_images.sweep(svc)  # the pools' copies of images gone for good
        except Exception:
            log.exception("recycle bin: the expunge pass failed")
