"""What a resource kind lets callers query: an allow-list of fields and to-one relations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, Numeric, String
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator, TypeEngine

from corral.api.errors import CorralError

Column = InstrumentedAttribute[Any]
"""A mapped column attribute of the spec's table, e.g. ``VmRow.memory_mb``."""


class ValueType(StrEnum):
    """How query values for a column are read from text."""

    int = "int"
    float = "float"
    bool = "bool"
    datetime = "datetime"
    str = "str"


def value_type(sql_type: TypeEngine[Any]) -> ValueType:
    """The ``ValueType`` of a column type; ``CorralError`` for types that are not queryable
    (JSON, binary...): such columns must stay out of specs."""
    t: Any = sql_type
    if isinstance(t, TypeDecorator):
        t = t.impl_instance
    for base, kind in (
        (Boolean, ValueType.bool),
        (Integer, ValueType.int),
        (Numeric, ValueType.float),
        (Float, ValueType.float),
        (DateTime, ValueType.datetime),
        (String, ValueType.str),
    ):
        if isinstance(t, base):
            return kind
    raise CorralError(f"column type {sql_type!r} is not queryable")


@dataclass(frozen=True)
class Field:
    """A queryable column. ``enum``: values must be members (compared as their string values)."""

    column: Column
    enum: type[StrEnum] | None = None

    @property
    def type(self) -> ValueType:
        return value_type(self.column.expression.type)

    @property
    def nullable(self) -> bool:
        return bool(getattr(self.column.expression, "nullable", True))


@dataclass(frozen=True)
class Relation:
    """A to-one link: ``local`` (a column of this spec's table) points at the ``remote`` column
    (unique, by default ``id``) of the target spec's table, so joining never multiplies rows.
    ``target`` is a callable so specs can refer to each other in any order. Joins are LEFT OUTER:
    a row without a related row has null related fields."""

    target: Callable[[], QuerySpec]
    local: Column
    remote: str = "id"


@dataclass(frozen=True, eq=False)
class QuerySpec:
    """The allow-list of one resource kind: only these names can be filtered, sorted or selected.

    ``fields`` maps API names (dots allowed, e.g. ``capacity.cpus_used``) to columns of ``table``;
    ``aliases`` maps extra names to field names (``memory`` -> ``memory_mb``) or to dotted paths
    through a relation (``username`` -> ``user.name``); ``relations`` maps
    names to to-one relations walked by dotted paths (``host.cluster.name``). ``default_sort`` is a
    ``sort`` parameter text; ``id_field`` breaks ties so paging is stable. Construction checks the
    spec and raises ``CorralError`` on a programming mistake (a column of another table, an alias
    to nothing, an unqueryable type).
    """

    name: str
    table: type[Any]
    fields: Mapping[str, Column | Field]
    relations: Mapping[str, Relation] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    default_sort: str = "created_at"
    id_field: str = "id"

    def __post_init__(self) -> None:
        normal = {k: v if isinstance(v, Field) else Field(v) for k, v in self.fields.items()}
        object.__setattr__(self, "fields", normal)
        for name, f in normal.items():
            if f.column.class_ is not self.table:
                raise CorralError(f"{self.name}.{name}: column is not of {self.table.__name__}")
            _ = f.type
        for name, rel in self.relations.items():
            if rel.local.class_ is not self.table:
                raise CorralError(f"{self.name}.{name}: local column is not of the table")
            if name in normal:
                raise CorralError(f"{self.name}.{name}: both a field and a relation")
        for alias, target in self.aliases.items():
            head = target.split(".", 1)[0]
            to_relation = "." in target and head in self.relations
            if (target not in normal and not to_relation) or alias in normal:
                raise CorralError(f"{self.name}: bad alias {alias!r} -> {target!r}")
        if self.id_field not in normal:
            raise CorralError(f"{self.name}: id field {self.id_field!r} is not a field")

    def path(self, name: str) -> list[str]:
        """The dotted path ``name`` stands for: itself, or what an alias to a related field
        names (``username`` -> ``["user", "name"]``)."""
        target = self.aliases.get(name)
        if target is not None and target not in self.fields:
            return target.split(".")
        return name.split(".")

    def field(self, name: str) -> Field | None:
        """The field called ``name`` (or aliased so), if any."""
        f = self.fields.get(self.aliases.get(name, name))
        assert f is None or isinstance(f, Field)
        return f

    def allowed(self, prefix: str = "") -> list[str]:
        """Every name accepted at this level, relations as ``name.*``, sorted."""
        names = [*self.fields, *self.aliases, *(f"{r}.*" for r in self.relations)]
        return sorted(prefix + n for n in names)
