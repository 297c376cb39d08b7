"""Compile parsed conditions and sort keys into SQLAlchemy statements over a ``QuerySpec``.

Semantics, identical on SQLite and PostgreSQL (only portable SQL is emitted):

- a dotted path walks to-one relations with LEFT OUTER JOINs, one alias per relation path
  (``q_host``, ``q_host__cluster``), so the same table may be joined several times;
- ``=``, ``<``... compare typed values; text compares case-sensitively (binary on SQLite, the
  database collation on PostgreSQL);
- ``!=`` and ``not-in`` also match rows where the field is null or the related row is missing;
- ``~`` is ``lower(field) LIKE lower(pattern) ESCAPE '\\'``: case-insensitive on both databases
  (for non-ASCII letters only PostgreSQL lowers them); only on text fields;
- ``is_null`` on a related field also matches rows without a related row;
- sorting puts nulls last when ascending and first when descending (PostgreSQL's default), then
  breaks ties by the spec's id so pages are stable.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import aliased

from corral.api.errors import InvalidQuery
from corral.server.query.coerce import coerce
from corral.server.query.parse import Condition, Op, SortKey, parse_sort
from corral.server.query.schema import Field, QuerySpec, ValueType

_ORDERED = (ValueType.int, ValueType.float, ValueType.datetime, ValueType.str)
_MAX_HOPS = 8
_COMPARE = {
    Op.eq: operator.eq,
    Op.ne: operator.ne,
    Op.gt: operator.gt,
    Op.ge: operator.ge,
    Op.lt: operator.lt,
    Op.le: operator.le,
}


@dataclass(frozen=True)
class _Target:
    """A resolved path: the column expression to use and how to read values for it."""

    column: ColumnElement[Any]
    field: Field
    nullable: bool


class _Joins:
    """The outer joins one statement needs, keyed by relation path, in the order first needed."""

    def __init__(self, spec: QuerySpec) -> None:
        self.spec = spec
        self.joins: dict[tuple[str, ...], tuple[Any, ColumnElement[bool]]] = {}

    def resolve(self, path: Sequence[str], verb: str) -> _Target:
        """The column at ``path``; ``InvalidQuery(field=...)`` if ``path`` is not allowed."""
        dotted = ".".join(path)
        if len(path) == 1:
            path = self.spec.path(path[0])
        spec, entity, via = self.spec, self.spec.table, False
        for i in range(min(len(path), _MAX_HOPS)):
            f = spec.field(".".join(path[i:]))
            if f is not None:
                column = getattr(entity, f.column.key)
                return _Target(column.expression, f, via or f.nullable)
            name = path[i]
            rel = spec.relations.get(name)
            prefix = ".".join(path[:i])
            if rel is not None and i + 1 < len(path):
                target = rel.target()
                key = tuple(path[: i + 1])
                if key not in self.joins:
                    alias = aliased(target.table, name="q_" + "__".join(key))
                    on = getattr(alias, rel.remote) == getattr(entity, rel.local.key)
                    self.joins[key] = (alias, on)
                spec, entity, via = target, self.joins[key][0], True
                continue
            allowed = spec.allowed(prefix + "." if prefix else "")
            if rel is not None:
                why = f"{dotted!r} is a relation: name one of its fields, e.g. {dotted}.name"
            else:
                why = f"unknown field {dotted!r} (allowed: {', '.join(allowed)})"
            raise InvalidQuery(f"cannot {verb} {dotted!r}: {why}", field=dotted, allowed=allowed)
        raise InvalidQuery(f"cannot {verb} {dotted!r}: path too long", field=dotted)

    def join(self, stmt: Select[Any]) -> Select[Any]:
        for alias, on in self.joins.values():
            stmt = stmt.outerjoin(alias, on)
        return stmt


def _text(cond: Condition) -> str:
    if not isinstance(cond.value, str):
        raise InvalidQuery(f"{cond.field}: {cond.op} needs one value", field=cond.field)
    return cond.value


def _clause(joins: _Joins, cond: Condition) -> ColumnElement[bool]:
    t = joins.resolve(cond.path, "filter by")
    col, name, op = t.column, cond.field, cond.op
    if op is Op.is_null:
        if not isinstance(cond.value, bool):
            raise InvalidQuery(f"{name}: is_null needs true or false", field=name)
        return col.is_(None) if cond.value else col.is_not(None)
    if op in (Op.in_, Op.not_in):
        if not isinstance(cond.value, list) or not cond.value:
            raise InvalidQuery(f"{name}: {op} needs a list of values", field=name)
        values = [coerce(t.field, name, v) for v in cond.value]
        if op is Op.in_:
            return col.in_(values)
        return or_(col.not_in(values), col.is_(None)) if t.nullable else col.not_in(values)
    if op is Op.like:
        if t.field.type is not ValueType.str:
            raise InvalidQuery(f"{name}: ~ works on text fields only", field=name)
        return func.lower(col).like(func.lower(_text(cond)), escape="\\")
    value = coerce(t.field, name, _text(cond))
    if op is Op.ne and t.nullable:
        return or_(col != value, col.is_(None))
    if op not in (Op.eq, Op.ne) and t.field.type not in _ORDERED:
        raise InvalidQuery(f"{name}: {t.field.type} fields support = and != only", field=name)
    clause: ColumnElement[bool] = _COMPARE[op](col, value)
    return clause


def _order(joins: _Joins, keys: Sequence[SortKey]) -> list[ColumnElement[Any]]:
    spec = joins.spec
    keys = list(keys) or parse_sort(spec.default_sort)
    out: list[ColumnElement[Any]] = []
    for k in keys:
        col = joins.resolve(k.path, "sort by").column
        out.append(col.desc().nulls_first() if k.descending else col.asc().nulls_last())
    if spec.field(keys[-1].field) is not spec.field(spec.id_field):
        out.append(joins.resolve((spec.id_field,), "sort by").column.asc())
    return out


def apply(
    stmt: Select[Any],
    spec: QuerySpec,
    conds: Sequence[Condition] = (),
    sort: Sequence[SortKey] = (),
    *,
    where: Sequence[ColumnElement[bool]] = (),
    include: Sequence[str] = (),
    limit: int | None = None,
    offset: int = 0,
) -> Select[Any]:
    """``stmt`` (a select from ``spec.table``, e.g. ``select(VmRow)``) filtered by ``conds`` (AND)
    and the extra ``where`` clauses (e.g. tag subqueries), ordered by ``sort`` (or the spec's
    default) then id, paged by ``limit``/``offset``. ``include`` names related dotted fields
    (``host.name``) added as extra result columns labelled with the path (``row._mapping``).

    Raises ``InvalidQuery(field=...)`` for a field outside the spec, a value of the wrong type or
    an operator the field does not support. Nothing outside the spec can be reached.
    """
    joins = _Joins(spec)
    clauses = [_clause(joins, c) for c in conds]
    order = _order(joins, sort)
    extra = [joins.resolve(p.split("."), "select").column.label(p) for p in include]
    stmt = joins.join(stmt).where(*clauses, *where).order_by(*order)
    if extra:
        stmt = stmt.add_columns(*extra)
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt.offset(offset) if offset else stmt


def count_stmt(
    spec: QuerySpec,
    conds: Sequence[Condition] = (),
    *,
    where: Sequence[ColumnElement[bool]] = (),
) -> Select[int]:
    """``SELECT count(*)`` of the rows ``apply`` would return without paging (the page's
    ``total``). Same errors as ``apply``."""
    joins = _Joins(spec)
    clauses = [_clause(joins, c) for c in conds]
    stmt: Select[Any] = select(func.count()).select_from(spec.table)
    return joins.join(stmt).where(*clauses, *where)


def split_fields(spec: QuerySpec, fields: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split selected ``fields`` into the model's own (``id``, ``capacity.cpus_used``; check them
    with ``validate_fields``) and related ones reached through a relation (``host.name``; checked
    here, pass them to ``apply(include=...)``). Raises ``InvalidQuery`` for an unknown related
    field."""
    own: list[str] = []
    related: list[str] = []
    joins = _Joins(spec)
    for f in fields:
        head = f.split(".", 1)[0]
        if head in spec.relations and spec.field(f) is None:
            joins.resolve(f.split("."), "select")
            related.append(f)
        else:
            own.append(f)
    return own, related
