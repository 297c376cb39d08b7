"""Snapshots of data volumes: external qcow2 snapshots forming a tree per volume.

Taking a snapshot freezes the volume's current content (on a running VM too: a live disk-only
snapshot, optionally quiesced through the guest agent) and the volume goes on in a new overlay.
Reverting to any snapshot starts a new branch from it (the VM must be stopped; what was written
since the last snapshot is discarded). ``current`` marks the snapshot the volume's present
content descends from. Deleting a snapshot merges its data into its children (online or
offline), so no other snapshot and no branch loses anything. A volume's chain holds at most
``MAX_CHAIN`` snapshots.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from corral.api.common import Model, Name, OwnedResource

MAX_CHAIN = 128
"""Most snapshots between a volume's present content and its root."""


class SnapshotStatus(StrEnum):
    creating = "creating"
    ready = "ready"
    reverting = "reverting"
    deleting = "deleting"
    error = "error"


class SnapshotKind(StrEnum):
    manual = "manual"
    auto = "auto"


class Snapshot(OwnedResource):
    volume_id: str
    parent_id: str | None = Field(None, description="the snapshot this one was taken after")
    current: bool = Field(description="the volume's present content descends from it")
    status: SnapshotStatus
    kind: SnapshotKind = SnapshotKind.manual
    vm_snapshot_id: str | None = Field(
        None, description="the whole-VM snapshot this node is part of (deleted with it only)"
    )
    size_gb: int = Field(description="the volume's size when the snapshot was taken")
    used_bytes: int | None = Field(
        None,
        description="bytes the node's file (Ceph: snapshot) takes on the pool: what was written"
        " between its parent and it (measured when it was taken, again when a merge rewrote it);"
        " None: not measured",
    )
    description: str = ""
    error: str | None = None


class SnapshotCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)
    quiesce: bool = Field(
        False, description="freeze the guest's file systems first (needs the guest agent)"
    )


class SnapshotUpdate(Model):
    name: Name | None = None
    description: str | None = Field(None, max_length=1024)
