"""Reading the audit log: who sees which records, paged queries and streamed exports (CSV, JSON).

Visibility: platform admins see every record; other callers see the records of the projects where
their role grants ``audit:list`` (project admins). A request scoped to a project
(``Caller.project_id``) sees only that project's records. Records are never changed here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.api.audit import AuditEvent, AuditExportFormat, AuditResult
from corral.api.common import Page
from corral.api.errors import InvalidQuery, NotFound
from corral.server.db.tables_audit import AuditEventRow as Row
from corral.server.identity.caller import Caller
from corral.server.query import Condition, Field, QuerySpec, apply, count_stmt, parse_q, parse_sort
from corral.server.query.coerce import parse_datetime
from corral.server.services.listing import ListRequest, page_of, plan, query_rows

AUDIT_EVENTS = QuerySpec(
    name="audit_event",
    table=Row,
    fields={
        "id": Row.id,
        "started_at": Row.started_at,
        "finished_at": Row.finished_at,
        "actor_id": Row.actor_id,
        "actor_name": Row.actor_name,
        "auth_method": Row.auth_method,
        "project_id": Row.project_id,
        "client_ip": Row.client_ip,
        "method": Row.method,
        "path": Row.path,
        "action": Row.action,
        "target_type": Row.target_type,
        "target_id": Row.target_id,
        "status_code": Row.status_code,
        "result": Field(Row.result, AuditResult),
        "error_code": Row.error_code,
        "error_message": Row.error_message,
        "operation_id": Row.operation_id,
    },
    aliases={"actor": "actor_name", "status": "status_code", "time": "started_at"},
    default_sort="-started_at",
)
"""What ``q`` and ``sort`` may name (the request summary is not queryable)."""

EXPORT_BATCH = 500
CSV_FIELDS = tuple(AuditEvent.model_fields)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def visible_events(caller: Caller) -> ColumnElement[bool]:
    """The records ``caller`` may read (module docstring)."""
    cond: ColumnElement[bool]
    if caller.is_platform_admin:
        cond = true()
    else:
        projects = caller.projects_with("audit:list")
        cond = Row.project_id.in_(projects) if projects else false()
    if caller.project_id is not None:
        cond = and_(cond, Row.project_id == caller.project_id)
    return cond


def to_model(row: Row) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        auth_method=row.auth_method,
        project_id=row.project_id,
        client_ip=row.client_ip,
        method=row.method,
        path=row.path,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        status_code=row.status_code,
        result=AuditResult(row.result),
        error_code=row.error_code,
        error_message=row.error_message,
        operation_id=row.operation_id,
        request=json.loads(row.request) if row.request else None,
    )


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_datetime(value)
    except ValueError as exc:
        raise InvalidQuery(
            f"invalid {name} {value!r}: expected an ISO-8601 date-time, e.g. 2024-05-01T12:00:00Z",
            field=name,
            value=value,
        ) from exc


@dataclass(frozen=True)
class Filter:
    """A validated filter: ``q`` conditions, the time range and the visibility condition."""

    conds: Sequence[Condition]
    where: Sequence[ColumnElement[bool]]

    @classmethod
    def make(cls, *, caller: Caller, q: str, since: str | None, until: str | None) -> Filter:
        """Parse and check ``q`` (fields of ``AUDIT_EVENTS``) and the time range: ``since`` <=
        ``started_at`` < ``until`` (ISO-8601; naive = UTC). ``InvalidQuery`` (400) on any mistake."""
        conds = parse_q(q)
        where = [visible_events(caller)]
        start, end = _time(since, "since"), _time(until, "until")
        if start is not None:
            where.append(Row.started_at >= start)
        if end is not None:
            where.append(Row.started_at < end)
        flt = cls(conds, where)
        count_stmt(AUDIT_EVENTS, flt.conds, where=flt.where)  # raises on a bad field or value
        return flt


async def list_events(
    *, sm: async_sessionmaker[AsyncSession], flt: Filter, req: ListRequest
) -> Page[Any]:
    """One page of the records ``flt`` (visibility, time range) and the list request ``req``
    (``q``, ``sort``: default newest first, ``fields``, ``count``) select."""
    p = plan(AUDIT_EVENTS, AuditEvent, req)
    async with sm() as s:
        rows, total = await query_rows(s, AUDIT_EVENTS, p, req, [*flt.where])
    return page_of([to_model(r[0]) for r in rows], rows, total, p, req)


async def get_event(
    *, sm: async_sessionmaker[AsyncSession], event_id: int, caller: Caller
) -> AuditEvent:
    """One record; ``NotFound`` if it does not exist or ``caller`` may not see it."""
    async with sm() as s:
        row = await s.scalar(select(Row).where(Row.id == event_id, visible_events(caller)))
    if row is None:
        raise NotFound(f"audit event {event_id} not found", kind="audit_event", ref=str(event_id))
    return to_model(row)


async def export(
    *, sm: async_sessionmaker[AsyncSession], flt: Filter, fmt: AuditExportFormat
) -> AsyncIterator[bytes]:
    """The records ``flt`` selects, oldest first (insertion order), as CSV (header line, one line
    per record, ``request`` as JSON text; text that a spreadsheet would run as a formula gets a
    leading ``'``) or as one JSON array of ``AuditEvent`` objects. Reads ``EXPORT_BATCH`` rows per
    short session (never holds the database across the stream); records written after the export
    started are not included."""
    async with sm() as s:
        top = await s.scalar(select(func.max(Row.id)))
    return _chunks(sm, flt, fmt, int(top or 0))


async def _chunks(
    sm: async_sessionmaker[AsyncSession], flt: Filter, fmt: AuditExportFormat, top: int
) -> AsyncIterator[bytes]:
    first = True
    if fmt is AuditExportFormat.csv:
        yield _csv_line(CSV_FIELDS)
    else:
        yield b"["
    after = 0
    while after < top:
        stmt = apply(select(Row), AUDIT_EVENTS, flt.conds, parse_sort("id"),
                     where=[*flt.where, Row.id > after, Row.id <= top], limit=EXPORT_BATCH)  # fmt: skip
        async with sm() as s:
            rows = list(await s.scalars(stmt))
        if not rows:
            break
        after = rows[-1].id
        parts: list[bytes] = []
        for row in rows:
            item = to_model(row).model_dump(mode="json")
            if fmt is AuditExportFormat.csv:
                parts.append(_csv_line([_cell(item[k]) for k in CSV_FIELDS]))
            else:
                parts.append((b"\n" if first else b",\n") + json.dumps(item).encode())
                first = False
        yield b"".join(parts)
    if fmt is AuditExportFormat.json:
        yield b"\n]\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def _csv_line(values: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(values)
    return buf.getvalue().encode()
