"""``client.audit``: the audit log (read-only): paged queries, single records, streamed exports.

Which records a caller sees is the server's rule: platform admins all of them, project admins their
projects' (``docs/access.md``). Selections combine ``q`` (the list query language, e.g.
``"action=vm.create,result=failure"``), equality conditions given as keywords
(``action="auth.login"``) and a time range (``since`` <= ``started_at`` < ``until``).
"""

# Generated from corral/sdk/_async/audit.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING

from corral.api.audit import AuditEvent, AuditExportFormat
from corral.api.common import DEFAULT_PAGE, Page
from corral.api.errors import InvalidInput
from corral.sdk._base import parse, parse_page
from corral.sdk._io import sync_write

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client

When = datetime | str | None
"""A bound of the time range: a datetime (naive = UTC), an ISO-8601 string, or ``None``."""
Condition = str | int | Enum | None
"""The value of a keyword condition (``None``: no condition)."""


def quoted(value: str) -> str:
    """``value`` as a quoted literal of the query language (``,``, ``|``, ``"`` and ``*`` safe
    in ``=`` conditions)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def query_text(q: str, where: Mapping[str, Condition]) -> str:
    """``q`` ANDed with ``field="value"`` for every keyword condition that is not ``None``."""
    conds = [q.strip()] if q.strip() else []
    for field, value in where.items():
        if value is None:
            continue
        text = str(value.value) if isinstance(value, Enum) else str(value)
        conds.append(f"{field}={quoted(text)}")
    return ",".join(conds)


def _when(value: When) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value or None


def _params(q: str, since: When, until: When, **extra: str | None) -> dict[str, str]:
    params = {"q": q, "since": _when(since), "until": _when(until), **extra}
    return {k: v for k, v in params.items() if v}


def export_format(value: AuditExportFormat | str) -> AuditExportFormat:
    """``"csv"`` / ``"json"`` as an ``AuditExportFormat``; anything else is ``InvalidInput``."""
    try:
        return AuditExportFormat(value)
    except ValueError:
        raise InvalidInput(
            f"unknown export format {value!r}: use csv or json", field="format", value=str(value)
        ) from None


class Audit:
    """``client.audit``: ``list``, ``iter``, ``get`` and ``export`` of audit records."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._path = "/audit-events"

    def list(
        self,
        q: str = "",
        *,
        since: When = None,
        until: When = None,
        sort: str | None = None,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        **where: Condition,
    ) -> Page[AuditEvent]:
        """One page of the selected records (module docstring), newest first unless ``sort``
        says otherwise (``field``, ``-field``, ``a,-b``). A bad condition, field or date is
        ``InvalidInput``; callers without ``audit:list`` anywhere get ``Forbidden``."""
        params = _params(
            query_text(q, where), since, until, sort=sort, limit=str(limit), offset=str(offset)
        )
        response = self._client.request("GET", self._path, params=params)
        return parse_page(AuditEvent, response.content)

    def iter(
        self,
        q: str = "",
        *,
        since: When = None,
        until: When = None,
        page_size: int = DEFAULT_PAGE,
        oldest_first: bool = False,
        **where: Condition,
    ) -> Iterator[AuditEvent]:
        """Every selected record, newest first (``oldest_first``: in the order written), page
        after page. Pages are cut by record id, not offset: records written meanwhile never make
        one repeat or go missing (those newer than the first page are not included)."""
        base = query_text(q, where)
        sort, op = ("id", ">") if oldest_first else ("-id", "<")
        last: int | None = None
        while True:
            cut = "" if last is None else f"id{op}{last}"
            page = self.list(
                ",".join(c for c in (base, cut) if c),
                since=since,
                until=until,
                sort=sort,
                limit=page_size,
            )
            yield from page.items
            if len(page.items) < page_size:
                return
            last = page.items[-1].id

    def get(self, event_id: int) -> AuditEvent:
        """One record; ``NotFound`` if it does not exist or the caller may not see it."""
        response = self._client.request("GET", f"{self._path}/{int(event_id)}")
        return parse(AuditEvent, response.content)

    def export(
        self,
        format: AuditExportFormat | str = AuditExportFormat.csv,
        *,
        q: str = "",
        since: When = None,
        until: When = None,
        **where: Condition,
    ) -> Iterator[bytes]:
        """The selected records, oldest first, as the bytes of a CSV file (a header line, then
        one line per record) or of a JSON array of ``AuditEvent`` objects, chunk by chunk as the
        server streams them. A bad ``format`` raises here; the server's refusals (bad ``q``,
        ``Forbidden``) raise at the first iteration."""
        params = _params(query_text(q, where), since, until, format=export_format(format).value)
        return self._client.stream(f"{self._path}/export", params=params)

    def export_to(
        self,
        target: IO[bytes] | str | Path,
        format: AuditExportFormat | str = AuditExportFormat.csv,
        *,
        q: str = "",
        since: When = None,
        until: When = None,
        **where: Condition,
    ) -> int:
        """``export`` written to ``target``; the number of bytes written.

        ``target`` is a binary file object (written as chunks arrive, left open) or a path: the
        file is written as ``<path>.part`` and renamed when the export is complete, so the path
        never holds a partial export (on failure nothing is left behind, an existing file stays as
        it was). The async client writes from a worker thread.
        """
        chunks = self.export(format, q=q, since=since, until=until, **where)
        if not isinstance(target, str | Path):
            written = 0
            for chunk in chunks:
                sync_write(target, chunk)
                written += len(chunk)
            return written
        path = Path(target)
        part = path.with_name(path.name + ".part")
        try:
            with part.open("wb") as out:
                written = 0
                for chunk in chunks:
                    sync_write(out, chunk)
                    written += len(chunk)
            part.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            raise InvalidInput(f"cannot write {path}: {exc.strerror}", path=str(path)) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        return written
