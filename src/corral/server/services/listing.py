"""Generic lookups, and the Query API of every list endpoint over any table.

A list request (``ListRequest``) carries paging, ``sort``, the ``q`` conditions, legacy
``field=value`` filters (each the same as ``q``'s ``field=value``), ``tag`` filters, ``fields``
selection and ``count``. Everything it names is checked against the kind's ``QuerySpec`` (an
allow-list): mistakes are ``InvalidQuery`` (400) naming the field, before any SQL runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.api.common import DEFAULT_PAGE, Page
from corral.api.errors import InvalidInput, InvalidQuery, NotFound
from corral.server.query import (
    Condition,
    Op,
    QuerySpec,
    add_related,
    apply,
    count_stmt,
    parse_fields,
    parse_q,
    parse_sort,
    select_fields,
    split_fields,
    validate_fields,
)
from corral.server.query.parse import MAX_CONDITIONS
from corral.server.services import tags as tagging

R = TypeVar("R")


async def get_row(
    s: AsyncSession,
    table: type[R],
    ref: str,
    kind: str,
    *,
    by_name: bool = True,
    where: ColumnElement[bool] | None = None,
) -> R:
    """The row whose id (or, if ``by_name``, name) is ``ref`` among the rows ``where`` selects
    (e.g. what the caller may see); ``NotFound`` otherwise. A name that several rows share (in
    different projects) is ``InvalidInput``: use the id, or name the project."""
    cols: Any = table
    cond = cols.id == ref
    if by_name:
        cond = or_(cond, cols.name == ref)
    stmt = select(table).where(cond)
    if where is not None:
        stmt = stmt.where(where)
    rows = list(await s.scalars(stmt.limit(3)))
    by_id = [r for r in rows if getattr(r, "id", None) == ref]
    if by_id:
        return by_id[0]
    if not rows:
        raise NotFound(f"{kind} {ref!r} not found", kind=kind, ref=ref)
    if len(rows) > 1:
        raise InvalidInput(
            f"several {kind}s are named {ref!r} (in different projects): use the id, or name the "
            "project (header X-Corral-Project)",
            kind=kind,
            ref=ref,
        )
    return rows[0]


async def find_row(s: AsyncSession, table: type[R], ref: str) -> R | None:
    cols: Any = table
    return await s.scalar(select(table).where(or_(cols.id == ref, cols.name == ref)).limit(1))


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ListRequest:
    """What a caller asked of a list endpoint. ``sort``, ``q`` and ``fields`` are the raw query
    texts (parsed against the kind's spec by ``plan``); ``filters`` are ``field=value`` query
    parameters (equality, like the same text in ``q``); ``tags``: only resources carrying every
    one of these user tags; ``count_only``: answer the total without items."""

    limit: int = DEFAULT_PAGE
    offset: int = 0
    sort: str = ""
    q: str = ""
    fields: str = ""
    count_only: bool = False
    tags: tuple[str, ...] = ()
    filters: Mapping[str, str] = field(default_factory=dict)

    def pop(self, name: str) -> tuple[str | None, ListRequest]:
        """The value of the ``name`` filter (handled by the caller, not the spec) and the
        request without it."""
        if name not in self.filters:
            return None, self
        rest = {k: v for k, v in self.filters.items() if k != name}
        return self.filters[name], replace(self, filters=rest)


@dataclass(frozen=True)
class Plan:
    """A checked list request: conditions, sort keys and the selected fields split into the
    model's own and related ones (``apply(include=...)``)."""

    conds: list[Condition]
    sort: list[Any]
    fields: list[str]
    related: list[str]


def plan(spec: QuerySpec, model: type[BaseModel] | None, req: ListRequest) -> Plan:
    """Parse and check ``req`` against ``spec`` (and ``model`` for selected fields). Raises
    ``InvalidQuery`` naming the field for anything the spec does not allow."""
    conds = parse_q(req.q) if req.q else []
    for name, value in req.filters.items():
        conds.append(Condition(tuple(name.split(".")), Op.eq, value))
    if len(conds) > MAX_CONDITIONS:
        raise InvalidQuery(f"at most {MAX_CONDITIONS} conditions", field="q")
    wanted = parse_fields(req.fields) if req.fields else []
    own, related = split_fields(spec, wanted)
    if model is not None:
        validate_fields(model, own)
    return Plan(conds, parse_sort(req.sort) if req.sort else [], wanted, related)


class FieldsPage(Page[dict[str, Any]]):
    """A page whose items hold only the fields the caller selected (``?fields=``): the HTTP
    layer sends it as is, without validating items against the full model."""


async def query_rows(
    s: AsyncSession,
    spec: QuerySpec,
    p: Plan,
    req: ListRequest,
    where: Sequence[ColumnElement[bool]] = (),
) -> tuple[list[Any], int]:
    """The rows (``Row``: entity first, then the related columns of ``p.related``) of one page
    and the total count of matches; no rows when ``req.count_only``."""
    where = [*where, *tagging.tagged(spec.name, getattr(spec.table, "id"), req.tags)]  # noqa: B009
    stmt = apply(  # built first: it checks the sort keys and selected fields too
        select(spec.table),
        spec,
        p.conds,
        p.sort,
        where=where,
        include=p.related,
        limit=req.limit,
        offset=req.offset,
    )
    total = int(await s.scalar(count_stmt(spec, p.conds, where=where)) or 0)
    if req.count_only or total == 0:
        return [], total
    return list((await s.execute(stmt)).all()), total


def page_of(models: list[Any], rows: list[Any], total: int, p: Plan, req: ListRequest) -> Page[Any]:
    """The answer: a ``Page`` of models, or a ``FieldsPage`` of the selected fields."""
    if not p.fields:
        return Page[Any](items=models, total=total, limit=req.limit, offset=req.offset)
    items = [
        select_fields(
            add_related(m.model_dump(mode="json"), {k: r._mapping[k] for k in p.related}),
            p.fields,
        )
        for m, r in zip(models, rows, strict=True)
    ]
    return FieldsPage(items=items, total=total, limit=req.limit, offset=req.offset)


@dataclass(frozen=True)
class Kind(Generic[R, M]):
    """A resource kind: its table, its name in messages, how a row becomes a contract model and
    what its list endpoint lets callers query (``spec``). Models with ``tags`` get their tags."""

    name: str
    table: type[R]
    to_model: Callable[[R], M]
    spec: QuerySpec
    model: type[M]

    async def models(self, s: AsyncSession, rows: list[R]) -> list[M]:
        """Rows to contract models; override to add figures computed across rows."""
        return [self.to_model(r) for r in rows]

    async def tagged(self, s: AsyncSession, models: list[M]) -> list[M]:
        """``models`` with their user and system tags (one query for all)."""
        if not models or "tags" not in self.model.model_fields:
            return models
        ids = [getattr(m, "id") for m in models]  # noqa: B009
        return tagging.with_tags(models, await tagging.tags_of(s, self.spec.name, ids))

    async def get(
        self,
        sm: async_sessionmaker[AsyncSession],
        ref: str,
        where: ColumnElement[bool] | None = None,
    ) -> M:
        async with sm() as s:
            row = await get_row(s, self.table, ref, self.name, where=where)
            return (await self.tagged(s, await self.models(s, [row])))[0]

    async def list(
        self,
        sm: async_sessionmaker[AsyncSession],
        req: ListRequest,
        where: ColumnElement[bool] | None = None,
    ) -> Page[Any]:
        """One page of what ``req`` asks among the rows ``where`` selects (e.g. what the caller
        may see). ``InvalidQuery`` for a request the spec does not allow."""
        p = plan(self.spec, self.model, req)
        async with sm() as s:
            rows, total = await query_rows(s, self.spec, p, req, [] if where is None else [where])
            models = await self.tagged(s, await self.models(s, [r[0] for r in rows]))
        return page_of(models, rows, total, p, req)
