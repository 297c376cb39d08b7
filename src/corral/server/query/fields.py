"""Field selection (``?fields=id,name,host.name``) over API models' JSON dicts (pure, no SQL)."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from corral.api.errors import InvalidQuery


def _unknown(field: str, allowed: Sequence[str]) -> InvalidQuery:
    names = sorted(allowed)
    return InvalidQuery(
        f"cannot select {field!r}: unknown field (allowed: {', '.join(names)})",
        field=field,
        allowed=names,
    )


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``annotation`` (``Model``, ``Model | None``), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _submodel(arg)) is not None:
                return found
    return None


def validate_fields(model: type[BaseModel], fields: Sequence[str]) -> None:
    """Check that every dotted field names a field of ``model`` (or of a nested model, e.g.
    ``capacity.cpus_used`` on ``Host``). Raises ``InvalidQuery(field=..., allowed=...)``. Call it
    before listing so an empty page still refuses unknown fields."""
    for f in fields:
        current: type[BaseModel] | None = model
        for i, part in enumerate(f.split(".")):
            if current is None or part not in current.model_fields:
                prefix = ".".join(f.split(".")[:i])
                names = list(current.model_fields) if current is not None else []
                raise _unknown(f, [f"{prefix}.{n}" if prefix else n for n in names])
            current = _submodel(current.model_fields[part].annotation)


def select_fields(model_dict: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    """``model_dict`` (e.g. ``vm.model_dump(mode="json")``) reduced to ``fields``, nested paths
    kept nested: ``["id", "capacity.cpus_used"]`` -> ``{"id": .., "capacity": {"cpus_used": ..}}``.
    A null object on the way yields null (``facts.hostname`` -> ``{"facts": None}``); selecting a
    whole object and one of its fields yields the whole object. No fields means everything (a
    copy). ``model_dict`` is never modified. Unknown fields raise ``InvalidQuery(field=...)``."""
    if not fields:
        return dict(model_dict)
    out: dict[str, Any] = {}
    for f in fields:
        src: Any = model_dict
        dst = out
        parts = f.split(".")
        for i, part in enumerate(parts):
            if not isinstance(src, Mapping) or part not in src:
                keys = list(src) if isinstance(src, Mapping) else []
                prefix = ".".join(parts[:i])
                raise _unknown(f, [f"{prefix}.{k}" if prefix else k for k in keys])
            value = src[part]
            if i == len(parts) - 1:
                dst[part] = value
                break
            if value is None:
                dst.setdefault(part, None)
                break
            if dst.get(part) is value:
                break  # the whole object is selected already
            nxt = dst.setdefault(part, {})
            if nxt is None:
                break
            dst, src = nxt, value
    return out


def add_related(model_dict: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``model_dict`` with dotted ``values`` nested in: ``{"host.name": "h1"}`` ->
    ``{..., "host": {"name": "h1"}}``. Use it on the labelled extra columns of
    ``apply(include=...)`` (``row._mapping``) before ``select_fields``."""
    out: dict[str, Any] = dict(model_dict)
    for dotted, value in values.items():
        dst = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            existing = dst.get(p)
            nxt = dict(existing) if isinstance(existing, Mapping) else {}
            dst[p] = nxt
            dst = nxt
        dst[leaf] = value
    return out
