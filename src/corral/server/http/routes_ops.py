"""Routes for operations, authentication and health."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from sqlalchemy import text

from corral import __version__
from corral.api.auth import Health, LoginRequest, Token
from corral.api.common import Page
from corral.api.operations import Operation
from corral.server.http.deps import Listing, Svc, User, filters_from
from corral.server.services import auth

router = APIRouter()


@router.post("/auth/login", response_model=Token, tags=["auth"])
async def login(req: LoginRequest, svc: Svc) -> Token:
    return await auth.login(svc=svc, username=req.username, password=req.password)


@router.get("/health", response_model=Health, tags=["health"])
async def health(svc: Svc) -> Health:
    async with svc.sessionmaker() as s:
        await s.execute(text("SELECT 1"))
    return Health(status="ok", version=__version__, database=svc.db.dialect.name)


@router.get("/operations", response_model=Page[Operation], tags=["operations"])
async def list_operations(request: Request, svc: Svc, _: User, q: Listing) -> Page[Operation]:
    allowed = {"status", "type", "target_type", "target_id"}
    return await svc.runner.list(q, filters_from(request, allowed))


@router.get("/operations/{op_id}", response_model=Operation, tags=["operations"])
async def get_operation(
    op_id: str,
    svc: Svc,
    _: User,
    wait: float = Query(0, ge=0, le=300, description="long-poll: seconds to wait for the end"),
) -> Operation:
    if wait > 0:
        return await svc.runner.wait(op_id, wait)
    return await svc.runner.get(op_id)


@router.post("/operations/{op_id}/cancel", response_model=Operation, tags=["operations"])
async def cancel_operation(op_id: str, svc: Svc, _: User) -> Operation:
    return await svc.runner.cancel(op_id)
