"""Volume snapshots (``client.snapshots``): take, rename, revert, delete by merging, a volume's tree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.api.common import DEFAULT_PAGE, Page
from corral.api.snapshots import Snapshot, SnapshotCreate, SnapshotUpdate
from corral.sdk._async.operation import AsyncOperation
from corral.sdk._async.resources import AsyncCollection, AsyncListing, Filter, Tags
from corral.sdk._base import build, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient


class AsyncSnapshots(AsyncCollection[Snapshot]):
    """``client.snapshots``: external qcow2 snapshots of data volumes, a tree per volume.

    Each snapshot has a ``parent_id`` (the snapshot taken before it on its branch); ``current``
    marks the one the volume's present content descends from. ``revert`` starts a new branch
    from a snapshot (the VM using the volume must be stopped; what was written since the last
    snapshot is discarded); ``delete`` merges the snapshot into its children, so nothing else
    loses data. Snapshot names are unique per volume: refer to one by id when two volumes have
    a snapshot of the same name."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/snapshots", Snapshot)

    async def create(
        self, volume: str, name: str, *, description: str = "", quiesce: bool = False
    ) -> AsyncOperation:
        """Take a snapshot ``name`` of a volume (id or name), live when its VM runs; ``quiesce``
        freezes the guest's file systems first (needs the guest agent). ``InvalidState`` when
        the volume is busy, holds no data yet or its chain is full (``context["reason"] ==
        "chain_full"``)."""
        body = build(SnapshotCreate, name=name, description=description, quiesce=quiesce)
        return await self._client.operation(
            "POST", f"/volumes/{quote_ref(volume)}/snapshots", body=body
        )

    async def update(
        self, ref: str, *, name: str | None = None, description: str | None = None
    ) -> AsyncOperation:
        """Rename the snapshot and/or change its description (``None``: unchanged)."""
        body = build(SnapshotUpdate, name=name, description=description)
        return await self._client.operation("PATCH", self._item(ref), body=body)

    async def revert(self, ref: str) -> AsyncOperation:
        """Start a new branch of the volume from this snapshot (the snapshot becomes
        ``current``). The VM using the volume must be stopped (``InvalidState`` otherwise); what
        was written since the last snapshot is discarded."""
        return await self._client.operation("POST", f"{self._item(ref)}/revert")

    async def tree(
        self,
        volume: str,
        *,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        sort: str | None = None,
        q: str | None = None,
        tag: Tags = None,
        **filters: Filter,
    ) -> Page[Snapshot]:
        """One page of a volume's (id or name) snapshot tree: every node with its
        ``parent_id``, ``current`` on the node the volume's content descends from; the Query
        API applies as on ``list``. ``tree_of(volume).iter()`` gets every node."""
        return await self.tree_of(volume).list(
            limit=limit, offset=offset, sort=sort, q=q, tag=tag, **filters
        )

    def tree_of(self, volume: str) -> AsyncListing[Snapshot]:
        """The listing of a volume's snapshots (``list``, ``iter``, ``count``, ``select``)."""
        return AsyncListing(self._client, f"/volumes/{quote_ref(volume)}/snapshots", Snapshot)

    def _item(self, ref: str) -> str:
        return f"{self._path}/{quote_ref(ref)}"
