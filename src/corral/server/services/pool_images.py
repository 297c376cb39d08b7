"""The pools' own copies of images (volumes from an image are made on them): removed once the
image is deleted and no volume of the pool is made on the copy any more.

``sweep`` runs in the server's background loop (``recycle.run_expunges``): for every recorded
copy whose image is gone and that no volume uses (``VolumeRow.base_image_id``), a host that
reaches the pool removes it (``pool.image.forget``) and the record goes. A failure (no host, the
agent refusing: e.g. Ceph clones left) keeps the record for the next pass.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import and_, delete, exists, select

from corral.api.agent import PoolImageForget
from corral.api.errors import CorralError
from corral.api.hosts import HostStatus
from corral.server.db.tables import (
    HostRow,
    ImageRow,
    PoolImageCopyRow,
    StoragePoolHostRow,
    StoragePoolRow,
    VolumeRow,
)
from corral.server.services.context import Services
from corral.server.services.pool_sync import agent_endpoint
from corral.server.workflows.volume_common import pool_ref

log = logging.getLogger(__name__)


async def sweep(svc: Services) -> int:
    """Remove the unused copies of deleted images; returns how many went."""
    async with svc.sessionmaker() as s:
        rows = (
            await s.execute(
                select(PoolImageCopyRow.pool_id, PoolImageCopyRow.image_id).where(
                    ~exists().where(ImageRow.id == PoolImageCopyRow.image_id),
                    ~exists().where(
                        and_(
                            VolumeRow.pool_id == PoolImageCopyRow.pool_id,
                            VolumeRow.base_image_id == PoolImageCopyRow.image_id,
                        )
                    ),
                )
            )
        ).all()
    gone = 0
    for pool_id, image_id in rows:
        try:
            await _forget(svc, pool_id, image_id)
            gone += 1
        except CorralError as exc:
            log.info(
                "pool %s: the copy of deleted image %s stays for now: %s", pool_id, image_id, exc
            )
    return gone


async def _forget(svc: Services, pool_id: str, image_id: str) -> None:
    async with svc.sessionmaker() as s:
        pool = await s.get(StoragePoolRow, pool_id)
        host = await s.scalar(
            select(HostRow)
            .join(StoragePoolHostRow, StoragePoolHostRow.host_id == HostRow.id)
            .where(
                StoragePoolHostRow.pool_id == pool_id,
                StoragePoolHostRow.ok.is_(True),
                HostRow.status == HostStatus.connected.value,
            )
            .limit(1)
        )
    if pool is not None and host is not None:
        task = PoolImageForget(pool=pool_ref(svc.secrets, pool), image_id=image_id)
        ep = await agent_endpoint(svc, host)
        await svc.agents.run(ep, f"pool-image-forget:{uuid.uuid4().hex}", task)
    elif pool is not None:
        raise CorralError("no connected host reaches the pool", pool_id=pool_id)
    async with svc.sessionmaker.begin() as s:
        await s.execute(
            delete(PoolImageCopyRow).where(
                PoolImageCopyRow.pool_id == pool_id, PoolImageCopyRow.image_id == image_id
            )
        )
