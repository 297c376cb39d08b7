"""Routes of the audit log: list, get and export. Read-only: there is no route that creates,
changes or deletes a record (PUT/PATCH/DELETE answer 405)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from corral.api.audit import AuditEvent, AuditExportFormat
from corral.api.common import MAX_ID, Page
from corral.server.db.types import utcnow
from corral.server.http.deps import EXPENSIVE, Listing, Svc, allow, listed
from corral.server.identity.caller import Caller
from corral.server.services import audit_query
from corral.server.services.audit_query import Filter

router = APIRouter(tags=["audit"])

Q = Annotated[
    str,
    Query(max_length=4096, description="conditions, e.g. action=vm.create,result=failure"),
]
Since = Annotated[
    str | None, Query(description="records started at or after (ISO-8601; naive = UTC)")
]
Until = Annotated[str | None, Query(description="records started before (ISO-8601)")]
_MEDIA = {
    AuditExportFormat.csv: "text/csv; charset=utf-8",
    AuditExportFormat.json: "application/json",
}


# PERMISSION: audit:list
@router.get("/audit-events", response_model=Page[AuditEvent])
async def list_audit_events(
    svc: Svc,
    caller: Annotated[Caller, allow("audit:list")],
    req: Listing,
    since: Since = None,
    until: Until = None,
) -> Any:
    """Records the caller may see (platform admins: all; project admins: their projects'),
    newest first unless ``sort`` says otherwise; the Query API's ``q``, ``fields`` and
    ``count`` too."""
    _, req = req.pop("since")
    _, req = req.pop("until")
    flt = Filter.make(caller=caller, q="", since=since, until=until)
    return listed(await audit_query.list_events(sm=svc.sessionmaker, flt=flt, req=req))


# PERMISSION: audit:list
@router.get("/audit-events/export", response_class=StreamingResponse, dependencies=[EXPENSIVE])
async def export_audit_events(
    svc: Svc,
    caller: Annotated[Caller, allow("audit:list")],
    format: AuditExportFormat = AuditExportFormat.csv,
    q: Q = "",
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """The records ``q``/``since``/``until`` select, oldest first, streamed as a CSV or JSON file."""
    flt = Filter.make(caller=caller, q=q, since=since, until=until)
    chunks = await audit_query.export(sm=svc.sessionmaker, flt=flt, fmt=format)
    name = f"corral-audit-{utcnow():%Y%m%dT%H%M%SZ}.{format.value}"
    return StreamingResponse(
        chunks,
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# PERMISSION: audit:list
@router.get("/audit-events/{event_id}", response_model=AuditEvent)
async def get_audit_event(
    event_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    svc: Svc,
    caller: Annotated[Caller, allow("audit:list")],
) -> AuditEvent:
    return await audit_query.get_event(sm=svc.sessionmaker, event_id=event_id, caller=caller)
