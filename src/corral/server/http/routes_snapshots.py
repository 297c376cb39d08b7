"""Routes for volume snapshots (``/volumes/{ref}/snapshots``, ``/snapshots``) and whole-VM
snapshots (``/vms/{ref}/snapshots``)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Response

from corral.api.common import Page
from corral.api.operations import Operation
from corral.api.snapshots import Snapshot, SnapshotCreate, SnapshotUpdate
from corral.api.vm_snapshots import VmSnapshot, VmSnapshotCreate, VmSnapshotList
from corral.server.db.tables import SnapshotRow
from corral.server.http.deps import IfMatch, Listing, Svc, accepted, allow, listed
from corral.server.http.versioning import VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import snapshots, vm_snapshots, volumes

router = APIRouter(route_class=VersionedRoute)
T: list[str | Enum] = ["snapshots"]
A: dict[str, Any] = {"status_code": 202, "response_model": Operation, "tags": T}


@router.get("/snapshots", response_model=Page[Snapshot], tags=T)
async def list_snapshots(
    svc: Svc, caller: Annotated[Caller, allow("snapshot:list")], q: Listing
) -> Any:
    where = snapshots.visible_snapshots(caller)
    return listed(await snapshots.SNAPSHOTS.list(svc.sessionmaker, q, where))


@router.get("/snapshots/{ref}", response_model=Snapshot, tags=T)
async def get_snapshot(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("snapshot:get")]
) -> Snapshot:
    return await snapshots.SNAPSHOTS.get(svc.sessionmaker, ref, snapshots.visible_snapshots(caller))


@router.get("/volumes/{ref}/snapshots", response_model=Page[Snapshot], tags=["volumes", *T])
async def list_volume_snapshots(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("snapshot:list")], q: Listing
) -> Any:
    """The volume's snapshot tree: every node with its ``parent_id``; ``current`` marks the one
    the volume's present content descends from."""
    vol = await volumes.VOLUMES.get(svc.sessionmaker, ref, volumes.visible_volumes(caller))
    where = snapshots.visible_snapshots(caller) & (SnapshotRow.volume_id == vol.id)
    return listed(await snapshots.SNAPSHOTS.list(svc.sessionmaker, q, where))


@router.post("/volumes/{ref}/snapshots", **A)
async def create_snapshot(
    ref: str,
    spec: SnapshotCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:create")],
) -> Operation:
    op = await snapshots.create_snapshot(svc=svc, volume_ref=ref, spec=spec, caller=caller)
    return accepted(response, op)


@router.patch("/snapshots/{ref}", **A)
async def update_snapshot(
    ref: str,
    spec: SnapshotUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:update")],
    if_match: IfMatch = None,
) -> Operation:
    op = await snapshots.update_snapshot(
        svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match
    )
    return accepted(response, op)


@router.post("/snapshots/{ref}/revert", **A)
async def revert_snapshot(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:update")],
    if_match: IfMatch = None,
) -> Operation:
    op = await snapshots.revert(svc=svc, ref=ref, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.delete("/snapshots/{ref}", **A)
async def delete_snapshot(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:delete")],
    if_match: IfMatch = None,
) -> Operation:
    op = await snapshots.delete(svc=svc, ref=ref, caller=caller, if_match=if_match)
    return accepted(response, op)


VT: list[str | Enum] = ["vms", *T]
VA: dict[str, Any] = {**A, "tags": VT}


@router.get("/vms/{ref}/snapshots", response_model=VmSnapshotList, tags=VT)
async def list_vm_snapshots(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("snapshot:list")]
) -> VmSnapshotList:
    """The VM's whole-VM snapshots, oldest first."""
    return await vm_snapshots.list_vm_snapshots(svc=svc, vm_ref=ref, caller=caller)


@router.post("/vms/{ref}/snapshots", **VA)
async def create_vm_snapshot(
    ref: str,
    spec: VmSnapshotCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:create")],
) -> Operation:
    """Snapshot every volume of the VM at one moment (``memory``: and its memory state). Its
    root disk must be a volume (``VmCreate.root_pool``)."""
    op = await vm_snapshots.snapshot_vm(svc=svc, vm_ref=ref, spec=spec, caller=caller)
    return accepted(response, op)


@router.get("/vms/{ref}/snapshots/{snapshot}", response_model=VmSnapshot, tags=VT)
async def get_vm_snapshot(
    ref: str, snapshot: str, svc: Svc, caller: Annotated[Caller, allow("snapshot:get")]
) -> VmSnapshot:
    return await vm_snapshots.get_vm_snapshot(svc=svc, vm_ref=ref, ref=snapshot, caller=caller)


@router.post("/vms/{ref}/snapshots/{snapshot}/revert", **VA)
async def revert_vm_snapshot(
    ref: str,
    snapshot: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:update")],
) -> Operation:
    """Revert the stopped VM's volumes to the snapshot (with memory: and resume it)."""
    op = await vm_snapshots.revert(svc=svc, vm_ref=ref, ref=snapshot, caller=caller)
    return accepted(response, op)


@router.delete("/vms/{ref}/snapshots/{snapshot}", **VA)
async def delete_vm_snapshot(
    ref: str,
    snapshot: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("snapshot:delete")],
) -> Operation:
    op = await vm_snapshots.delete(svc=svc, vm_ref=ref, ref=snapshot, caller=caller)
    return accepted(response, op)
