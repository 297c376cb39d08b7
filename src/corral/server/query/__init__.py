"""The Query API of list endpoints: ``q`` conditions, ``sort``, ``fields`` and counts.

Pure parsing lives in ``parse`` and ``fields``; ``compile`` turns parsed queries into SQLAlchemy
statements over a ``QuerySpec`` (an allow-list per resource kind, ready-made ones in ``specs``).
No web framework here. A list endpoint does::

    conds = parse_q(q); keys = parse_sort(sort); wanted = parse_fields(fields)
    own, related = split_fields(specs.VMS, wanted); validate_fields(Vm, own)
    total = await s.scalar(count_stmt(specs.VMS, conds))
    rows = await s.execute(apply(select(VmRow), specs.VMS, conds, keys,
                                 include=related, limit=limit, offset=offset))
    items = [select_fields(add_related(to_model(r[0]).model_dump(mode="json"),
                                       {k: r._mapping[k] for k in related}), wanted)
             for r in rows]
"""

from corral.server.query.compile import apply, count_stmt, split_fields
from corral.server.query.fields import add_related, select_fields, validate_fields
from corral.server.query.parse import (
    MAX_CONDITIONS,
    MAX_TEXT,
    Condition,
    Op,
    SortKey,
    parse_fields,
    parse_q,
    parse_sort,
)
from corral.server.query.schema import Field, QuerySpec, Relation, ValueType

__all__ = [
    "MAX_CONDITIONS",
    "MAX_TEXT",
    "Condition",
    "Field",
    "Op",
    "QuerySpec",
    "Relation",
    "SortKey",
    "ValueType",
    "add_related",
    "apply",
    "count_stmt",
    "parse_fields",
    "parse_q",
    "parse_sort",
    "select_fields",
    "split_fields",
    "validate_fields",
]
