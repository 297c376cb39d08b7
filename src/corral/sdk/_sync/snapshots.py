"""Volume snapshots (``client.snapshots``): take, rename, revert, delete by merging, a volume's tree."""

# Generated from corral/sdk/_async/snapshots.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.api.common import DEFAULT_PAGE, Page
from corral.api.snapshots import Snapshot, SnapshotCreate, SnapshotUpdate
from corral.sdk._base import build, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection, Filter, Listing, Tags

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client


class Snapshots(Collection[Snapshot]):
    """``client.snapshots``: external qcow2 snapshots of data volumes, a tree per volume.

    Each snapshot has a ``parent_id`` (the snapshot taken before it on its branch); ``current``
    marks the one the volume's present content descends from. ``revert`` starts a new branch
    from a snapshot (the VM using the volume must be stopped; what was written since the last
    snapshot is discarded); ``delete`` merges the snapshot into its children, so nothing else
    loses data. Snapshot names are unique per volume: refer to one by id when two volumes have
    a snapshot of the same name."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/snapshots", Snapshot)

    def create(
        self, volume: str, name: str, *, description: str = "", quiesce: bool = False
    ) -> Operation:
        """Take a snapshot ``name`` of a volume (id or name), live when its VM runs; ``quiesce``
        freezes the guest's file systems first (needs the guest agent). ``InvalidState`` when
        the volume is busy, holds no data yet or its chain is full (``context["reason"] ==
        "chain_full"``)."""
        body = build(SnapshotCreate, name=name, description=description, quiesce=quiesce)
        return self._client.operation("POST", f"/volumes/{quote_ref(volume)}/snapshots", body=body)

    def update(
        self, ref: str, *, name: str | None = None, description: str | None = None
    ) -> Operation:
        """Rename the snapshot and/or change its description (``None``: unchanged)."""
        body = build(SnapshotUpdate, name=name, description=description)
        return self._client.operation("PATCH", self._item(ref), body=body)

    def revert(self, ref: str) -> Operation:
        """Start a new branch of the volume from this snapshot (the snapshot becomes
        ``current``). The VM using the volume must be stopped (``InvalidState`` otherwise); what
        was written since the last snapshot is discarded."""
        return self._client.operation("POST", f"{self._item(ref)}/revert")

    def tree(
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
        return self.tree_of(volume).list(
            limit=limit, offset=offset, sort=sort, q=q, tag=tag, **filters
        )

    def tree_of(self, volume: str) -> Listing[Snapshot]:
        """The listing of a volume's snapshots (``list``, ``iter``, ``count``, ``select``)."""
        return Listing(self._client, f"/volumes/{quote_ref(volume)}/snapshots", Snapshot)

    def _item(self, ref: str) -> str:
        return f"{self._path}/{quote_ref(ref)}"
