"""Request dependencies: the services bundle, the caller's identity, list queries."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from corral.api.common import DEFAULT_PAGE, MAX_ID, MAX_PAGE, MAX_TAGS, Page, Tag
from corral.api.errors import Forbidden, RateLimited, Unauthenticated
from corral.api.operations import Operation
from corral.api.signing import is_signed
from corral.server.db.tables import HostRow
from corral.server.http import signed
from corral.server.identity.caller import Caller
from corral.server.identity.directory import load_caller
from corral.server.query import MAX_TEXT
from corral.server.services import auth, hosts
from corral.server.services.context import Services
from corral.server.services.listing import FieldsPage, ListRequest
from corral.util.asgi import bearer


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


def bearer_token(request: Request) -> str:
    token = bearer(request.scope)
    if token is None:
        raise Unauthenticated("this endpoint needs 'Authorization: Bearer <token>'; log in first")
    return token


async def current_user(request: Request, svc: Svc) -> str:
    return await auth.check_token(svc=svc, token=bearer_token(request))


PROJECT_HEADER = "x-corral-project"


async def current_caller(request: Request, svc: Svc) -> Caller:
    """The authenticated caller, scoped to the project the request names (header
    ``X-Corral-Project`` or query ``project``, id or name), if any. Also put on
    ``request.state.caller`` (the audit log reads it)."""
    cached: Caller | None = getattr(request.state, "caller", None)
    if cached is not None:
        return cached
    project = request.headers.get(PROJECT_HEADER) or request.query_params.get("project")
    if is_signed(request.headers):
        user_id, key_id = await _signed_user(request, svc)
        caller = await load_caller(
            svc.sessionmaker, svc.callers, user_id, project=project, method="access_key"
        )
        caller = replace(caller, access_key_id=key_id)
    else:
        user_id = await auth.check_token(svc=svc, token=bearer_token(request))
        caller = await load_caller(svc.sessionmaker, svc.callers, user_id, project=project)
    request.state.caller = caller
    return caller


async def _signed_user(request: Request, svc: Svc) -> tuple[str, str]:
    """(user id, AccessKey id) of a request signed with an AccessKey (checked once: maybe by the
    idempotency middleware already). Streaming uploads (PUT ``…/data``) may leave the body
    unsigned (``UNSIGNED-PAYLOAD``); every other body is hashed (a request that HTTP/1 framing
    gives no body is checked against the empty body unread)."""
    scope = request.scope
    if (done := signed.checked(scope)) is not None:
        return done
    body: bytes | None = None
    if signed.body_is_signed(scope):
        body = b"" if _no_body(request) else await request.body()
    return await signed.verify(svc, scope, body)


def _no_body(request: Request) -> bool:
    """Whether an HTTP/1.x request has no body by its framing (no ``Transfer-Encoding``, no or a
    zero ``Content-Length``): the server reads none, so awaiting it only costs time."""
    if request.scope.get("http_version") not in ("1.0", "1.1"):
        return False
    length: bytes | None = None
    for key, value in request.scope.get("headers", ()):
        if key == b"transfer-encoding":
            return False
        if key == b"content-length":
            if length is not None:
                return False
            length = value
    return length is None or length.strip() == b"0"


class Allow:
    """Dependency: the caller, who must hold ``permission`` somewhere (in a project, or as a
    platform admin for platform kinds); the route checks the permission again on the target
    row's project. Every route declares one (or is listed as public / agent-only): a test
    walks the route table."""

    def __init__(self, permission: str) -> None:
        self.permission = permission

    async def __call__(self, caller: Annotated[Caller, Depends(current_caller)]) -> Caller:
        if not caller.can(self.permission):
            raise Forbidden(f"you may not {self.permission}", permission=self.permission)
        return caller


def allow(permission: str) -> Any:
    """``Annotated[Caller, allow("vm:create")]``."""
    return Depends(Allow(permission))


async def _expensive(svc: Svc, caller: Annotated[Caller, Depends(current_caller)]) -> None:
    wait = svc.expensive_limiter.hit(f"user:{caller.user_id}")
    if wait > 0:
        raise RateLimited(
            "too many expensive requests (VM creation, image imports, exports): retry later",
            retry_after_s=round(wait, 3),
        )


EXPENSIVE = Depends(_expensive)
"""Route dependency of expensive calls: the caller's share of ``Services.expensive_limiter``
(``429 rate_limited`` with ``Retry-After`` past it)."""


async def current_host(request: Request, svc: Svc) -> HostRow:
    """The host whose agent is calling (its per-host token)."""
    try:
        return await hosts.host_by_token(svc=svc, token=bearer_token(request))
    except Exception as exc:
        raise Unauthenticated("unknown agent token") from exc


User = Annotated[str, Depends(current_user)]
AgentHost = Annotated[HostRow, Depends(current_host)]

RESERVED = frozenset({"limit", "offset", "sort", "q", "fields", "count", "tag", "wait", "project"})
"""Query parameters of list endpoints that are not ``field=value`` filters."""


async def list_request(
    request: Request,
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=MAX_ID),
    sort: str = Query(
        "", max_length=MAX_TEXT, description="fields, -field for descending: -memory,name"
    ),
    q: str = Query(
        "",
        max_length=MAX_TEXT,
        description="conditions joined by commas (AND), e.g. "
        "state=running,memory>=1024,host.cluster.name=c1; operators = != > >= < <= ~ (glob, "
        "case-insensitive), =in:a|b, =not-in:a|b, =null, !=null",
    ),
    fields: str = Query(
        "", max_length=MAX_TEXT, description="only these fields of each item: id,name,host.name"
    ),
    count: bool = Query(False, description="only the total number of matches (no items)"),
    tag: list[Tag] = Query(
        default_factory=list, max_length=MAX_TAGS, description="carrying every one of these tags"
    ),
) -> ListRequest:
    """The list request of a list endpoint. Other query parameters are ``field=value`` filters
    (equality, checked against the kind's query spec: an unknown field is ``400``)."""
    filters = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    return ListRequest(
        limit=limit,
        offset=offset,
        sort=sort,
        q=q,
        fields=fields,
        count_only=count,
        tags=tuple(tag),
        filters=filters,
    )


Listing = Annotated[ListRequest, Depends(list_request)]


def listed(page: Page[Any]) -> Any:
    """What a list route returns: the page, or, when the caller selected fields, a JSON answer
    sent as is (the items are partial, so not validated against the full model)."""
    if isinstance(page, FieldsPage):
        return JSONResponse(page.model_dump(mode="json"))
    return page


IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description="change only if the resource still has this ETag"),
]


def accepted(response: Response, op: Operation) -> Operation:
    """Set the 202 Location header of an operation response."""
    response.headers["Location"] = f"/api/v1/operations/{op.id}"
    return op
