"""Automatic snapshots: volumes with a schedule get a snapshot every period; the newest ``keep``
automatic snapshots stay, older ones are merged away. Manual snapshots are never deleted here:
when the chain is full and no automatic snapshot can make room, the round is skipped (and noted
in the volume's ``error``).

One action per volume per tick (the volume is busy while a snapshot is taken or merged): first
prune what exceeds ``keep`` (or the chain limit), then take the due snapshot. ``run_due`` is
called by the server's scheduler loop every ``TICK_S`` seconds.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from corral.api.errors import CorralError
from corral.api.snapshots import MAX_CHAIN, SnapshotCreate, SnapshotKind, SnapshotStatus
from corral.api.volumes import VolumeStatus
from corral.server.db.tables import SnapshotRow, VolumeRow
from corral.server.db.types import utcnow
from corral.server.services import snapshots
from corral.server.services.context import Services

log = logging.getLogger(__name__)

TICK_S = 10.0
BATCH = 100
"""Most volumes handled per tick (the rest wait for the next)."""
IDLE = (VolumeStatus.available.value, VolumeStatus.in_use.value)


async def run_due(svc: Services) -> int:
    """Handle the volumes whose automatic snapshot is due: prune or snapshot each (see the
    module docstring). Returns how many operations were started."""
    now = utcnow()
    async with svc.sessionmaker() as s:
        ids = list(
            await s.scalars(
                select(VolumeRow.id)
                .where(
                    VolumeRow.next_auto_snapshot_at <= now,
                    VolumeRow.status.in_(IDLE),
                    VolumeRow.instantiated.is_(True),
                )
                .order_by(VolumeRow.next_auto_snapshot_at)
                .limit(BATCH)
            )
        )
    started = 0
    for vid in ids:
        try:
            op = await _one(svc, vid)
        except CorralError as exc:
            log.warning("automatic snapshot of volume %s: %s", vid, exc)
            continue
        if op is not None:
            svc.runner.launch(op)
            started += 1
    return started


async def _one(svc: Services, volume_id: str) -> Any:
    """Prune or snapshot one volume; the started operation (launch it), or None."""
    async with svc.sessionmaker() as s:
        vol = await s.get(VolumeRow, volume_id)
        if vol is None or vol.snapshot_every_min is None or vol.snapshot_keep is None:
            return None
        autos = list(
            await s.scalars(
                select(SnapshotRow)
                .where(
                    SnapshotRow.volume_id == vol.id,
                    SnapshotRow.kind == SnapshotKind.auto.value,
                    SnapshotRow.status == SnapshotStatus.ready.value,
                )
                .order_by(SnapshotRow.created_at)
            )
        )
        full = await snapshots.chain_length(s, vol) >= MAX_CHAIN
        if autos and (len(autos) > vol.snapshot_keep or (full and len(autos) >= 1)):
            op = await snapshots.merge(svc, s, vol, autos[0], user_id=vol.owner_id)
            await s.commit()
            return op
        if full:
            vol.error = "automatic snapshot skipped: the chain is full of manual snapshots"
            vol.next_auto_snapshot_at = utcnow() + timedelta(minutes=vol.snapshot_every_min)
            await s.commit()
            return None
        name = f"auto-{utcnow():%Y%m%d-%H%M%S}"
        n = await s.scalar(
            select(func.count()).select_from(SnapshotRow).where(SnapshotRow.volume_id == vol.id)
        )
        spec = SnapshotCreate(name=f"{name}-{n}", description="automatic")
        op = await snapshots.take(svc, s, vol, spec, user_id=vol.owner_id, kind=SnapshotKind.auto)
        vol.next_auto_snapshot_at = utcnow() + timedelta(minutes=vol.snapshot_every_min)
        await s.commit()
        return op
