"""Whole-VM snapshots (``client.vm_snapshots``): every volume of a VM at one moment, optionally
with its memory; list, get, revert, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.api.vm_snapshots import VmSnapshot, VmSnapshotCreate, VmSnapshotList
from corral.sdk._async.operation import AsyncOperation
from corral.sdk._base import build, parse, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient

VmSnapshotItems = list[VmSnapshot]
"""A VM's snapshots (the ``list`` method's name hides the builtin in the class body)."""


class AsyncVmSnapshots:
    """``client.vm_snapshots``: snapshots of a whole VM, named per VM.

    The VM's root disk must be a volume (``client.vms.create(..., root_pool=...)``). A VM
    snapshot is one node in each of the VM's volumes' snapshot trees, taken at one moment
    (``VmSnapshot.snapshots``: their ids, by device order; ``Snapshot.vm_snapshot_id`` points
    back); with ``memory`` the running VM's memory state is saved too. Those nodes go with the
    VM snapshot only. ``vm`` is the VM's id or name, ``ref`` the VM snapshot's id or name."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        vm: str,
        name: str,
        *,
        description: str = "",
        memory: bool = False,
        quiesce: bool = True,
    ) -> AsyncOperation:
        """Snapshot every volume of the VM at one moment (live when it runs), as ``name``.

        ``quiesce``: a running VM's file systems are frozen through its guest agent when it
        answers (``VmSnapshot.quiesced``; else the snapshot is crash-consistent). ``memory``:
        the running VM's memory is saved too, and a revert resumes the guest where it was.
        Returns the operation taking it (``target_id``: the VM snapshot's id). Raises
        ``InvalidInput`` for a bad name (before any request) or ``memory`` of a VM that does not
        run, ``NotFound``, ``NameTaken`` when
        the VM has a snapshot of that name, ``InvalidState`` when the VM's root disk is
        host-local (``context["reason"] == "host_local_root"``), the VM or a volume is busy,
        or a volume's chain is full (``"chain_full"``), and ``QuotaExceeded``."""
        body = build(
            VmSnapshotCreate, name=name, description=description, memory=memory, quiesce=quiesce
        )
        return await self._client.operation("POST", self._path(vm), body=body)

    async def list(self, vm: str) -> VmSnapshotItems:
        """Every snapshot of the VM, oldest first (``NotFound`` for an unknown VM)."""
        response = await self._client.request("GET", self._path(vm))
        return parse(VmSnapshotList, response.content).items

    async def get(self, vm: str, ref: str) -> VmSnapshot:
        """The VM's snapshot with this id or name; ``NotFound`` if none."""
        response = await self._client.request("GET", self._item(vm, ref))
        return parse(VmSnapshot, response.content)

    async def revert(self, vm: str, ref: str) -> AsyncOperation:
        """Revert the stopped VM to the snapshot: each of its volumes starts a new branch from
        its node (volumes attached since are left as they are; what was written since is
        discarded); with a memory snapshot the VM is then resumed from the saved state.
        ``InvalidState`` when the VM is not stopped or the snapshot not ready. A revert that
        failed half-way can be repeated: it finishes what is left."""
        return await self._client.operation("POST", f"{self._item(vm, ref)}/revert")

    async def delete(self, vm: str, ref: str) -> AsyncOperation:
        """Delete the snapshot: each volume's node is merged into its children (the VM may run)
        and the memory state removed; no volume loses data. ``InvalidState`` while another
        operation uses it, ``InUse`` when a node has copy-on-write clones (rbd volumes made
        from it)."""
        return await self._client.operation("DELETE", self._item(vm, ref))

    @staticmethod
    def _path(vm: str) -> str:
        return f"/vms/{quote_ref(vm)}/snapshots"

    def _item(self, vm: str, ref: str) -> str:
        return f"{self._path(vm)}/{quote_ref(ref)}"
