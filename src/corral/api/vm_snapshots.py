"""Whole-VM snapshots: every volume of a VM snapshotted at one moment, optionally with its memory.

A VM snapshot needs the VM's root disk to be a volume (``VmCreate.root_pool``). Taking one on a
running VM freezes the guest's file systems through its guest agent when it answers
(``quiesced``; otherwise the snapshot is crash-consistent: the VM is paused while its disks are
switched), and with ``memory`` saves the VM's memory too, so that a revert resumes the guest
where it was. Each disk gets a node in its volume's snapshot tree (``snapshots``: their ids;
``Snapshot.vm_snapshot_id``); those nodes are removed with the VM snapshot, not alone.

Revert: the VM must be stopped; every disk starts a new branch from its node (volumes attached
since are left as they are), then with ``memory`` the VM is resumed from the saved state (on
the host that holds the memory file: its host when the snapshot was taken). A revert that
fails half-way can be repeated: it finishes what is left. Delete merges each node into its
children (online or offline) and removes the memory file.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from corral.api.common import Model, Name, OwnedResource


class VmSnapshotStatus(StrEnum):
    creating = "creating"
    ready = "ready"
    reverting = "reverting"
    deleting = "deleting"
    error = "error"


class VmSnapshot(OwnedResource):
    vm_id: str
    status: VmSnapshotStatus
    memory: bool = Field(description="the VM's memory state was saved with its disks")
    quiesced: bool = Field(description="the guest's file systems were frozen (guest agent)")
    snapshots: list[str] = Field(
        default_factory=list, description="the snapshot node of each volume, by device order"
    )
    description: str = ""
    error: str | None = None


class VmSnapshotCreate(Model):
    name: Name
    description: str = Field("", max_length=1024)
    memory: bool = Field(
        False, description="save the running VM's memory too (a revert resumes it)"
    )
    quiesce: bool = Field(
        True,
        description="freeze the guest's file systems through its guest agent when it answers",
    )


class VmSnapshotList(Model):
    items: list[VmSnapshot]
