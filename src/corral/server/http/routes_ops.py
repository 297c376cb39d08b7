"""Routes for operations and health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import text

from corral import __version__
from corral.api.auth import Health
from corral.api.common import Page
from corral.api.operations import Operation
from corral.server.db.tables import OperationRow
from corral.server.http.deps import Listing, Svc, allow, listed
from corral.server.identity.access import visible_operations
from corral.server.identity.caller import Caller

router = APIRouter()


@router.get("/health", response_model=Health, tags=["health"])
async def health(svc: Svc) -> Health:
    async with svc.sessionmaker() as s:
        await s.execute(text("SELECT 1"))
    return Health(status="ok", version=__version__, database=svc.db.dialect.name)


@router.get("/operations", response_model=Page[Operation], tags=["operations"])
async def list_operations(
    svc: Svc, caller: Annotated[Caller, allow("operation:list")], q: Listing
) -> Any:
    return listed(await svc.runner.list(q, visible_operations(caller, OperationRow)))


@router.get("/operations/{op_id}", response_model=Operation, tags=["operations"])
async def get_operation(
    op_id: str,
    svc: Svc,
    caller: Annotated[Caller, allow("operation:get")],
    wait: float = Query(0, ge=0, le=300, description="long-poll: seconds to wait for the end"),
) -> Operation:
    op = await svc.runner.get(op_id, visible_operations(caller, OperationRow))
    if wait > 0 and not op.status.done:
        return await svc.runner.wait(op_id, wait)
    return op


@router.post("/operations/{op_id}/cancel", response_model=Operation, tags=["operations"])
async def cancel_operation(
    op_id: str, svc: Svc, caller: Annotated[Caller, allow("operation:cancel")]
) -> Operation:
    return await svc.runner.cancel(op_id, visible_operations(caller, OperationRow))
