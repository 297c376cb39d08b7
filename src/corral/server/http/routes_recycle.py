"""Routes for the recycle bin (``/recycle-bin``) and the deletion policies
(``/deletion-policies``)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Response

from corral.api.operations import Operation
from corral.api.recycle import DeletionPolicies, RecycleItem, RecycleKind, RecycleRestore
from corral.server.http.deps import Svc, accepted, allow
from corral.server.http.versioning import VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import recycle

router = APIRouter(route_class=VersionedRoute)
T: list[str | Enum] = ["recycle-bin"]
A: dict[str, Any] = {"status_code": 202, "response_model": Operation, "tags": T}


@router.get("/recycle-bin", response_model=list[RecycleItem], tags=T)
async def list_recycle_bin(
    svc: Svc,
    caller: Annotated[Caller, allow("recycle_bin:list")],
    kind: RecycleKind | None = None,
) -> list[RecycleItem]:
    """Deleted VMs, volumes and images waiting in the bin, newest first."""
    return await recycle.list_bin(svc, caller, kind)


@router.post("/recycle-bin/{entry_id}/restore", **A)
async def restore_from_bin(
    entry_id: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("recycle_bin:restore")],
    spec: RecycleRestore | None = None,
) -> Operation:
    op = await recycle.restore(svc, entry_id, spec or RecycleRestore(), caller)
    return accepted(response, op)


@router.post("/recycle-bin/{entry_id}/expunge", **A)
async def expunge_from_bin(
    entry_id: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("recycle_bin:expunge")],
) -> Operation:
    return accepted(response, await recycle.expunge(svc, entry_id, caller))


@router.get("/deletion-policies", response_model=DeletionPolicies, tags=T)
async def get_deletion_policies(
    svc: Svc, caller: Annotated[Caller, allow("deletion_policy:get")]
) -> DeletionPolicies:
    return await recycle.get_policies(svc)


@router.put("/deletion-policies", **A)
async def set_deletion_policies(
    spec: DeletionPolicies,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("deletion_policy:update")],
) -> Operation:
    return accepted(response, await recycle.set_policies(svc, spec, caller))
