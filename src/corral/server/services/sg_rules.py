"""Security-group rules: checking rules to add (remote groups, room, duplicates) and the
priority arithmetic that keeps a group's priorities 0..n-1 through inserts, moves and deletes.

Priorities shift in two statements (to negative values, then back) so that the unique
(group, priority) constraint holds after every statement; a moving rule waits at ``PARKED``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import CorralError, InvalidInput, NotFound
from corral.api.security_groups import MAX_RULES, RuleKey, RuleSpec, rule_key
from corral.server.db.tables import SecurityGroupRow, SecurityGroupRuleRow
from corral.server.identity.access import visible
from corral.server.identity.caller import Caller
from corral.server.services.listing import get_row

KIND = "security_group"
PARKED = -(2**30)
"""Where a moving rule waits while the others shift: never a priority, nor a shifted one."""

G = SecurityGroupRow
R = SecurityGroupRuleRow


def visible_groups(caller: Caller) -> ColumnElement[bool]:
    """The security groups ``caller`` sees."""
    return visible(caller, G, KIND)


async def resolve_remote(s: AsyncSession, ref: str, caller: Caller, project_id: str | None) -> str:
    """The id of the remote group ``ref``: one ``caller`` sees in ``project_id``. ``NotFound``
    (none the caller sees), ``InvalidInput`` (it is in another project, or the name is
    ambiguous)."""
    mine = and_(visible_groups(caller), G.project_id == project_id)
    try:
        return (await get_row(s, G, ref, KIND, where=mine)).id
    except NotFound:
        try:
            await get_row(s, G, ref, KIND, where=visible_groups(caller))
        except NotFound:
            raise NotFound(f"remote group {ref!r} not found", kind=KIND, ref=ref) from None
        raise InvalidInput(
            f"remote group {ref!r} is in another project: a rule may only name a group of its"
            " own project",
            remote_group=ref,
        ) from None


async def rule_keys(
    s: AsyncSession, group_id: str, *, but: str | None = None
) -> dict[RuleKey, int]:
    """The keys (``rule_key``) of the group's rules (except rule ``but``) -> their priority."""
    cols = (R.direction, R.ethertype, R.protocol, R.port_min, R.port_max, R.remote_cidr)
    stmt = select(*cols, R.remote_group_id, R.action, R.priority).where(R.group_id == group_id)
    if but is not None:
        stmt = stmt.where(R.id != but)
    return {tuple(row[:8]): row[8] for row in await s.execute(stmt)}  # type: ignore[misc]


async def check_rules(
    s: AsyncSession,
    rules: Sequence[RuleSpec],
    caller: Caller,
    project_id: str | None,
    *,
    existing: Mapping[RuleKey, int],
    room: int,
) -> tuple[list[str | None], list[dict[str, Any]]]:
    """Check rules to add to a group of ``project_id`` that has the rules ``existing`` (keys ->
    priority) and room for ``room`` more: remote groups resolvable (``resolve_remote``), within
    the room, no rule twice (among ``rules`` or with an existing one). Returns the remote group
    ids of the rules, and the offending rules as ``[{index, error}]``."""
    ids: list[str | None] = []
    errors: list[dict[str, Any]] = []
    seen: dict[RuleKey, int] = {}
    resolved: dict[str, str | CorralError] = {}
    for i, rule in enumerate(rules):
        problems: list[str] = []
        rid: str | None = None
        if rule.remote_group is not None:
            if rule.remote_group not in resolved:
                try:
                    resolved[rule.remote_group] = await resolve_remote(
                        s, rule.remote_group, caller, project_id
                    )
                except (NotFound, InvalidInput) as exc:
                    resolved[rule.remote_group] = exc
            found = resolved[rule.remote_group]
            if isinstance(found, CorralError):
                problems.append(found.message)
            else:
                rid = found
        if i >= room:
            problems.append(f"beyond the {MAX_RULES} rules a group may have")
        if rule.remote_group is None or rid is not None:
            key = rule_key(rule, rid)
            if key in existing:
                problems.append(f"the group has this rule already (priority {existing[key]})")
            elif key in seen:
                problems.append(f"same rule as rule {seen[key]}")
            else:
                seen[key] = i
        if problems:
            errors.append({"index": i, "error": "; ".join(problems)})
        ids.append(rid)
    return ids, errors


def invalid_rules(errors: list[dict[str, Any]], total: int) -> InvalidInput:
    """The error of a set of rules of which ``errors`` (``[{index, error}]``) are invalid."""
    first = errors[0]
    return InvalidInput(
        f"{len(errors)} of {total} rule(s) invalid, nothing changed; rule {first['index']}:"
        f" {first['error']}",
        rules=errors,
    )


def rule_row(group_id: str, priority: int, spec: RuleSpec, remote_id: str | None) -> R:
    return R(
        group_id=group_id,
        priority=priority,
        direction=spec.direction.value,
        ethertype=spec.ethertype.value,
        protocol=spec.protocol.value,
        port_min=spec.port_min,
        port_max=spec.port_max if spec.port_max is not None else spec.port_min,
        remote_cidr=spec.remote_cidr,
        remote_group_id=remote_id,
        action=spec.action.value,
        description=spec.description,
    )


def add_rules(
    s: AsyncSession, group_id: str, start: int, rules: Iterable[RuleSpec], ids: Iterable[str | None]
) -> None:
    for i, (spec, rid) in enumerate(zip(rules, ids, strict=True)):
        s.add(rule_row(group_id, start + i, spec, rid))


async def rule_count(s: AsyncSession, group_id: str) -> int:
    return int(await s.scalar(select(func.count()).where(R.group_id == group_id)) or 0)


async def shift(s: AsyncSession, group_id: str, lo: int, hi: int | None, delta: int) -> None:
    """Move the group's rules of priority ``lo``..``hi`` (None: to the end) by ``delta`` (+1 or
    -1; the place they move into is free). Two statements: to ``-(p + delta) - 1`` (negative,
    distinct), then back to ``p + delta``; neither can collide with a priority in use."""
    where = [R.group_id == group_id, R.priority >= lo]
    if hi is not None:
        if hi < lo:
            return
        where.append(R.priority <= hi)
    sync = {"synchronize_session": False}
    await s.execute(
        update(R).where(*where).values(priority=-(R.priority + delta) - 1).execution_options(**sync)
    )
    await s.execute(
        update(R)
        .where(R.group_id == group_id, R.priority < 0, R.priority != PARKED)
        .values(priority=-R.priority - 1)
        .execution_options(**sync)
    )


async def _set_priority(s: AsyncSession, rule_id: str, priority: int) -> None:
    await s.execute(
        update(R)
        .where(R.id == rule_id)
        .values(priority=priority)
        .execution_options(synchronize_session=False)
    )


async def move(s: AsyncSession, group_id: str, rule_id: str, old: int, new: int) -> None:
    """Move a rule from priority ``old`` to ``new``, the ones between shifting by one."""
    if old == new:
        return
    await _set_priority(s, rule_id, PARKED)
    if old < new:
        await shift(s, group_id, old + 1, new, -1)
    else:
        await shift(s, group_id, new, old - 1, +1)
    await _set_priority(s, rule_id, new)
