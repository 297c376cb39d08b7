"""Turn query-text values into typed values for a column, with ``InvalidQuery`` naming the field."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from corral.api.errors import InvalidQuery
from corral.server.query.schema import Field, ValueType

_INT = re.compile(r"[+-]?\d{1,19}")
_INT_LIMIT = 2**63
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
# A "+" in a URL query decodes to a space: "2024-05-01T10:00:00 02:00" means "+02:00".
_SPACE_OFFSET = re.compile(r"(.*\d) (\d\d(?::?\d\d)?)")


def _bad(field: str, value: str, expected: str) -> InvalidQuery:
    return InvalidQuery(
        f"invalid value {value!r} for {field}: expected {expected}",
        field=field,
        value=value,
        expected=expected,
    )


def parse_datetime(value: str) -> dt.datetime:
    """An ISO-8601 date or date-time; naive ones are UTC. ``ValueError`` if unreadable."""
    m = _SPACE_OFFSET.fullmatch(value)
    if m and "T" in value:
        value = f"{m.group(1)}+{m.group(2)}"
    out = dt.datetime.fromisoformat(value)
    return out if out.tzinfo is not None else out.replace(tzinfo=dt.UTC)


def coerce(f: Field, field: str, value: str) -> Any:
    """``value`` as the Python type of ``f``'s column: int (64-bit), float (finite), bool
    (true/false/1/0/yes/no), datetime (ISO-8601, naive = UTC), str (an ``enum`` member's value if
    the field has one). Raises ``InvalidQuery(field=field, value=value, expected=...)``."""
    kind = f.type
    if kind is ValueType.int:
        if not _INT.fullmatch(value) or not -_INT_LIMIT <= int(value) < _INT_LIMIT:
            raise _bad(field, value, "an integer")
        return int(value)
    if kind is ValueType.float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise _bad(field, value, "a number")
        return number
    if kind is ValueType.bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise _bad(field, value, "true or false")
    if kind is ValueType.datetime:
        try:
            return parse_datetime(value)
        except ValueError as exc:
            raise _bad(field, value, "an ISO-8601 date-time, e.g. 2024-05-01T12:00:00Z") from exc
    if f.enum is not None and value not in {m.value for m in f.enum}:
        raise _bad(field, value, "one of " + ", ".join(m.value for m in f.enum))
    return value
