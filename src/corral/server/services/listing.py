"""Generic lookups and paged, sorted, filtered lists over any table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from corral.api.common import ListQuery, Page
from corral.api.errors import InvalidInput, NotFound

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


def _coerce(col: Any, field: str, value: Any) -> Any:
    """Turn a query-string value into the column's Python type (``InvalidInput`` if it cannot)."""
    if not isinstance(value, str):
        return value
    try:
        kind = col.type.python_type
    except NotImplementedError:
        return value
    if kind is bool:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise InvalidInput(f"{field} must be true or false", field=field, value=value)
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError as exc:
            raise InvalidInput(f"{field} must be a number", field=field, value=value) from exc
    return value


async def list_rows(
    s: AsyncSession,
    table: type[R],
    query: ListQuery,
    filters: dict[str, Any],
    where: ColumnElement[bool] | None = None,
) -> tuple[list[R], int]:
    """One page of rows matching ``filters`` (column == value), sorted by ``query.sort``.

    Unknown filter or sort fields raise ``InvalidInput``. Ties are broken by id so pages are stable.
    """
    cols = getattr(table, "__table__").c  # noqa: B009
    conds = []
    for field, value in filters.items():
        if field not in cols:
            raise InvalidInput(f"cannot filter by {field!r}", field=field)
        conds.append(cols[field] == _coerce(cols[field], field, value))
    if where is not None:
        conds.append(where)
    key = query.sort.lstrip("-")
    if key not in cols:
        raise InvalidInput(f"cannot sort by {key!r}", field=key)
    order = cols[key].desc() if query.sort.startswith("-") else cols[key].asc()
    total = await s.scalar(select(func.count()).select_from(table).where(*conds))
    rows = await s.scalars(
        select(table)
        .where(*conds)
        .order_by(order, cols["id"])
        .limit(query.limit)
        .offset(query.offset)
    )
    return list(rows), int(total or 0)


M = TypeVar("M")


@dataclass(frozen=True)
class Kind(Generic[R, M]):
    """A resource kind: its table, its name in messages and how a row becomes a contract model."""

    name: str
    table: type[R]
    to_model: Callable[[R], M]

    async def models(self, s: AsyncSession, rows: list[R]) -> list[M]:
        """Rows to contract models; override to add figures computed across rows."""
        return [self.to_model(r) for r in rows]

    async def get(
        self,
        sm: async_sessionmaker[AsyncSession],
        ref: str,
        where: ColumnElement[bool] | None = None,
    ) -> M:
        async with sm() as s:
            row = await get_row(s, self.table, ref, self.name, where=where)
            return (await self.models(s, [row]))[0]

    async def list(
        self,
        sm: async_sessionmaker[AsyncSession],
        query: ListQuery,
        filters: dict[str, Any],
        where: ColumnElement[bool] | None = None,
    ) -> Page[M]:
        async with sm() as s:
            rows, total = await list_rows(s, self.table, query, filters, where)
            return Page[M](
                items=await self.models(s, rows),
                total=total,
                limit=query.limit,
                offset=query.offset,
            )
