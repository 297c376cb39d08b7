"""Request dependencies: the services bundle, the caller's identity, list queries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response

from corral.api.common import DEFAULT_PAGE, MAX_PAGE, ListQuery
from corral.api.errors import InvalidInput, Unauthenticated
from corral.api.operations import Operation
from corral.server.db.tables import HostRow
from corral.server.services import auth, hosts
from corral.server.services.context import Services


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'; log in first")
    return token.strip()


async def current_user(request: Request, svc: Svc) -> str:
    return await auth.check_token(svc=svc, token=_bearer(request))


async def current_host(request: Request, svc: Svc) -> HostRow:
    """The host whose agent is calling (its per-host token)."""
    try:
        return await hosts.host_by_token(svc=svc, token=_bearer(request))
    except Exception as exc:
        raise Unauthenticated("unknown agent token") from exc


User = Annotated[str, Depends(current_user)]
AgentHost = Annotated[HostRow, Depends(current_host)]

_PAGING = {"limit", "offset", "sort"}


async def list_query(
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0),
    sort: str = Query("created_at", max_length=64, description="field, or -field for descending"),
) -> ListQuery:
    return ListQuery(limit=limit, offset=offset, sort=sort)


def filters_from(request: Request, allowed: set[str]) -> dict[str, Any]:
    """``field=value`` query parameters; any field not in ``allowed`` is refused."""
    out: dict[str, Any] = {}
    for key, value in request.query_params.items():
        if key in _PAGING or key == "wait":
            continue
        if key not in allowed:
            raise InvalidInput(
                f"cannot filter by {key!r} (allowed: {', '.join(sorted(allowed))})", field=key
            )
        out[key] = value
    return out


Listing = Annotated[ListQuery, Depends(list_query)]


def accepted(response: Response, op: Operation) -> Operation:
    """Set the 202 Location header of an operation response."""
    response.headers["Location"] = f"/api/v1/operations/{op.id}"
    return op
