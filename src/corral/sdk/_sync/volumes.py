"""Data volumes (``client.volumes``): create, attach/detach, grow, I/O limits, a VM's volumes."""

# Generated from corral/sdk/_async/volumes.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from corral.api.common import DEFAULT_PAGE, Page
from corral.api.volumes import (
    SnapshotSchedule,
    Volume,
    VolumeAttach,
    VolumeCreate,
    VolumeMove,
    VolumeQos,
    VolumeResize,
    VolumeUpdate,
)
from corral.sdk._base import build, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection, Filter, Listing, Tags

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client

Qos = VolumeQos | Mapping[str, int]
"""I/O limits: a ``VolumeQos`` or a mapping of its fields (``{"total_iops_sec": 500}``); limits
not given are 0 (unlimited)."""


class Volumes(Collection[Volume]):
    """``client.volumes``: disks of their own on a storage pool, attached to a VM (several VMs
    when ``shareable``). A volume is only recorded when created; its first attach creates it on
    the pool. Sizes are GiB; volumes only grow."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/volumes", Volume)

    def create(
        self,
        name: str,
        *,
        size_gb: int,
        pool: str,
        shareable: bool = False,
        qos: Qos | None = None,
        vm: str | None = None,
        image: str | None = None,
        snapshot: str | None = None,
    ) -> Operation:
        """Record a volume of ``size_gb`` GiB on ``pool`` (id or name), blank or a copy of
        ``image`` (a disk image, copied when the volume is created on the pool). Without ``vm``
        the operation is finished at once; with ``vm`` (id or name) it is the operation attaching
        the volume to that VM (which creates it on the pool). With ``snapshot`` (id or name; on
        ``pool``; no ``image``, no ``vm``) it is the ``volume.clone`` operation making it at
        once: a copy of the snapshot's data, on rbd a Ceph copy-on-write clone."""
        body = build(
            VolumeCreate,
            name=name,
            size_gb=size_gb,
            pool=pool,
            shareable=shareable,
            qos=qos,
            vm=vm,
            image=image,
            snapshot=snapshot,
        )
        return self._client.operation("POST", self._path, body=body)

    def update(self, ref: str, *, name: str | None = None, qos: Qos | None = None) -> Operation:
        """Rename the volume and/or replace its I/O limits (``None``: unchanged); new limits of
        an attached volume are applied to its VMs live."""
        body = build(VolumeUpdate, name=name, qos=qos)
        return self._client.operation("PATCH", self._item(ref), body=body)

    def schedule_snapshots(self, ref: str, *, every_minutes: int, keep: int) -> Operation:
        """Take an automatic snapshot of the volume every ``every_minutes`` and keep the newest
        ``keep`` automatic ones (manual snapshots are never deleted by the schedule)."""
        schedule = build(SnapshotSchedule, every_minutes=every_minutes, keep=keep)
        body = build(VolumeUpdate, snapshot_schedule=schedule)
        return self._client.operation("PATCH", self._item(ref), body=body)

    def unschedule_snapshots(self, ref: str) -> Operation:
        """Stop the volume's automatic snapshots (those taken stay)."""
        return self._client.operation(
            "PATCH",
            self._item(ref),
            content=b'{"snapshot_schedule": null}',
            headers={"Content-Type": "application/json"},
        )

    def attach(self, ref: str, vm: str) -> Operation:
        """Attach the volume to a VM (id or name) as its next free disk (``vdb``…); the first
        attach creates the volume on its pool."""
        body = build(VolumeAttach, vm=vm)
        return self._client.operation("POST", f"{self._item(ref)}/attach", body=body)

    def detach(self, ref: str, *, vm: str | None = None, timeout: float | None = None) -> Operation:
        """Detach the volume from its VM (``vm``: which one, for a shareable volume attached to
        several). The guest must release the disk within ``timeout`` s (server default 30) or
        the operation fails and the volume stays attached."""
        params: dict[str, str] = {}
        if vm is not None:
            params["vm"] = vm
        if timeout is not None:
            params["timeout"] = str(timeout)
        return self._client.operation("POST", f"{self._item(ref)}/detach", params=params)

    def resize(self, ref: str, size_gb: int) -> Operation:
        """Grow the volume to ``size_gb`` GiB (live when its VM runs); a shrink is refused."""
        body = build(VolumeResize, size_gb=size_gb)
        return self._client.operation("POST", f"{self._item(ref)}/resize", body=body)

    def move(self, ref: str, pool: str) -> Operation:
        """Move a detached volume without snapshots to ``pool`` (id or name): ``volume.move``
        copies its data there, switches it and deletes the old copy; its id, name and size
        stay. ``InvalidState`` (attached, snapshots, a pool not enabled), ``InvalidInput``
        (the same pool), ``PoolFull``, ``NoHostAvailable`` (no host reaches both pools)."""
        body = build(VolumeMove, pool=pool)
        return self._client.operation("POST", f"{self._item(ref)}/move", body=body)

    def delete(self, ref: str, *, expunge: bool = False) -> Operation:
        """Delete a volume no VM uses (``InUse`` otherwise). Under the ``delayed`` and ``never``
        deletion policies an available volume goes to the recycle bin (``volume.recycle``: its
        data and pool space kept until it is expunged); with ``expunge``, under the
        ``immediate`` policy or in another state it is deleted at once (``volume.delete``)."""
        params = {"expunge": "true"} if expunge else None
        return self._client.operation("DELETE", self._item(ref), params=params)

    def of_vm(
        self,
        vm_ref: str,
        *,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        sort: str | None = None,
        q: str | None = None,
        tag: Tags = None,
        **filters: Filter,
    ) -> Page[Volume]:
        """One page of the data volumes attached to a VM (id or name); the Query API applies as
        on ``list``."""
        return self.attached_to(vm_ref).list(
            limit=limit, offset=offset, sort=sort, q=q, tag=tag, **filters
        )

    def attached_to(self, vm_ref: str) -> Listing[Volume]:
        """The listing of a VM's data volumes (``list``, ``iter``, ``count``, ``select``)."""
        return Listing(self._client, f"/vms/{quote_ref(vm_ref)}/volumes", Volume)

    def _item(self, ref: str) -> str:
        return f"{self._path}/{quote_ref(ref)}"
