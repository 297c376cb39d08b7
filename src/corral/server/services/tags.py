"""Tags on resources: user tags (changed through the API) and system tags (set by code).

A tag is a row of ``tags`` keyed by the resource kind (a query spec's name: ``vm``, ``host``...)
and id. User tags and system tags live side by side (``system``); the API only ever adds or
removes user tags. Models of every ``Resource`` carry both lists, read in one query per page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper

from corral.api.common import MAX_TAGS
from corral.api.errors import Conflict
from corral.server.db.tables import TagRow
from corral.server.query import specs


def tagged(kind: str, id_column: Any, tags: Sequence[str]) -> list[ColumnElement[bool]]:
    """Conditions selecting the rows (whose id is ``id_column``) carrying every user tag of
    ``tags`` (AND)."""
    return [
        id_column.in_(
            select(TagRow.resource_id).where(
                TagRow.resource_type == kind, TagRow.tag == tag, TagRow.system.is_(False)
            )
        )
        for tag in dict.fromkeys(tags)
    ]


async def tags_of(
    s: AsyncSession, kind: str, ids: Sequence[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """``{id: (user tags, system tags)}`` for the resources ``ids`` of ``kind``, each list sorted;
    ids without tags are absent."""
    if not ids:
        return {}
    rows = await s.execute(
        select(TagRow.resource_id, TagRow.tag, TagRow.system)
        .where(TagRow.resource_type == kind, TagRow.resource_id.in_(list(set(ids))))
        .order_by(TagRow.tag)
    )
    out: dict[str, tuple[list[str], list[str]]] = {}
    for rid, tag, system in rows:
        out.setdefault(rid, ([], []))[1 if system else 0].append(tag)
    return out


def with_tags(models: list[Any], found: dict[str, tuple[list[str], list[str]]]) -> list[Any]:
    """``models`` (contract models with ``id``, ``tags``, ``system_tags``) with their tags set."""
    for m in models:
        user, system = found.get(m.id, ([], []))
        m.tags, m.system_tags = user, system
    return models


async def add(
    s: AsyncSession, kind: str, resource_id: str, tags: Iterable[str], *, system: bool = False
) -> None:
    """Add ``tags`` to the resource (already present ones are kept). ``Conflict`` (reason
    ``too_many_tags``) when it would carry more than ``MAX_TAGS`` user tags. Flushes in ``s``;
    the caller commits."""
    wanted = list(dict.fromkeys(tags))
    have = set(
        await s.scalars(
            select(TagRow.tag).where(
                TagRow.resource_type == kind,
                TagRow.resource_id == resource_id,
                TagRow.system.is_(system),
            )
        )
    )
    new = [t for t in wanted if t not in have]
    if not system and len(have) + len(new) > MAX_TAGS:
        raise Conflict(
            f"a resource carries at most {MAX_TAGS} tags ({len(have)} already)",
            reason="too_many_tags",
            limit=MAX_TAGS,
        )
    if not new:
        return
    values = [
        {"resource_type": kind, "resource_id": resource_id, "tag": t, "system": system} for t in new
    ]
    try:
        async with s.begin_nested():
            await s.execute(insert(TagRow), values)
    except IntegrityError:
        # a parallel request added some of them first: add the rest one by one
        for v in values:
            try:
                async with s.begin_nested():
                    await s.execute(insert(TagRow), [v])
            except IntegrityError:
                continue


async def remove(
    s: AsyncSession,
    kind: str,
    resource_id: str,
    tags: Sequence[str] | None = None,
    *,
    system: bool = False,
) -> int:
    """Remove ``tags`` (None: every tag of that class) from the resource; absent ones are
    ignored. Returns how many were removed. The caller commits."""
    cond = and_(
        TagRow.resource_type == kind,
        TagRow.resource_id == resource_id,
        TagRow.system.is_(system),
    )
    if tags is not None:
        cond = and_(cond, TagRow.tag.in_(list(tags)))
    result: Any = await s.execute(delete(TagRow).where(cond))
    return int(result.rowcount or 0)


async def forget(s: AsyncSession, kind: str, resource_id: str) -> None:
    """Remove every tag (user and system) of a resource that is being deleted."""
    await s.execute(
        delete(TagRow).where(TagRow.resource_type == kind, TagRow.resource_id == resource_id)
    )


def _forget_on_delete(kind: str) -> Any:
    def forget_tags(_mapper: Mapper[Any], connection: Connection, target: Any) -> None:
        connection.execute(
            delete(TagRow).where(TagRow.resource_type == kind, TagRow.resource_id == target.id)
        )

    return forget_tags


for _spec in specs.ALL.values():
    # a row deleted through the ORM takes its tags along, in the same transaction
    event.listen(_spec.table, "after_delete", _forget_on_delete(_spec.name))
