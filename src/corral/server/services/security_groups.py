"""Security groups: groups of a project, their ordered rules, export and import (enforced on
the NICs that have them: every change is pushed to the hosts concerned, ``net_sync``).

A group's rules have the priorities 0..n-1 (unique per group, 0 first). Every change of a group
starts by bumping its ``revision`` (one UPDATE of its row, conditional on the version read when
the request sent ``If-Match``): that row lock serializes the changes of one group on PostgreSQL
(SQLite has one writer), so each change sees the rules as the previous one left them.
Rule checks and the priority arithmetic are in ``sg_rules``. Changes are record changes: they answer
a finished operation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import (
    Conflict,
    InUse,
    InvalidInput,
    InvalidState,
    NameTaken,
    NotFound,
    PreconditionFailed,
)
from corral.api.operations import Operation
from corral.api.security_groups import (
    MAX_RULES,
    Action,
    Direction,
    EtherType,
    Protocol,
    Rule,
    RuleCreate,
    RuleExport,
    RuleImport,
    RuleSpec,
    RuleUpdate,
    SecurityGroup,
    SecurityGroupCreate,
    SecurityGroupUpdate,
    rule_key,
)
from corral.server.db.tables import (
    NicRow,
    NicSecurityGroupRow,
    SecurityGroupRow,
    SecurityGroupRuleRow,
    VmRow,
)
from corral.server.db.types import utcnow
from corral.server.identity.access import check_if_match, creation_project, require
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.net_sync import groups_changed
from corral.server.services.operations import to_model as op_model
from corral.server.services.sg_rules import (
    KIND,
    add_rules,
    check_rules,
    invalid_rules,
    move,
    resolve_remote,
    rule_count,
    rule_keys,
    rule_row,
    shift,
    visible_groups,
)

RULE_KIND = "security_group_rule"

G = SecurityGroupRow
R = SecurityGroupRuleRow


def rule_model(r: SecurityGroupRuleRow, names: Mapping[str, str]) -> Rule:
    """The contract model of a rule row; ``names``: remote group id -> name."""
    remote = r.remote_group_id
    return Rule(
        id=r.id,
        group_id=r.group_id,
        priority=r.priority,
        direction=Direction(r.direction),
        ethertype=EtherType(r.ethertype),
        protocol=Protocol(r.protocol),
        port_min=r.port_min,
        port_max=r.port_max,
        remote_cidr=r.remote_cidr,
        remote_group=None if remote is None else names.get(remote, remote),
        remote_group_id=remote,
        action=Action(r.action),
        description=r.description,
    )


def to_model(r: SecurityGroupRow, rule_count: int = 0, rules: Sequence[Rule] = ()) -> SecurityGroup:
    return SecurityGroup(
        id=r.id,
        name=r.name,
        description=r.description,
        intra_group=r.intra_group,
        revision=r.revision,
        rule_count=rule_count,
        rules=list(rules),
        created_at=r.created_at,
        updated_at=r.updated_at,
        project_id=r.project_id,
        owner_id=r.owner_id,
        shared=r.shared,
    )


async def rule_counts(s: AsyncSession, ids: Sequence[str]) -> dict[str, int]:
    """How many rules each group of ``ids`` has (one query; groups without rules absent)."""
    if not ids:
        return {}
    rows = await s.execute(
        select(R.group_id, func.count()).where(R.group_id.in_(list(ids))).group_by(R.group_id)
    )
    return {gid: int(n) for gid, n in rows}


class SecurityGroupsKind(Kind[SecurityGroupRow, SecurityGroup]):
    """Security groups with their ``rule_count`` (one query for the page), without their rules."""

    async def models(self, s: AsyncSession, rows: list[SecurityGroupRow]) -> list[SecurityGroup]:
        counts = await rule_counts(s, [r.id for r in rows])
        return [to_model(r, counts.get(r.id, 0)) for r in rows]


GROUPS = SecurityGroupsKind(KIND, G, to_model, specs.SECURITY_GROUPS, SecurityGroup)


async def _rules(s: AsyncSession, group_id: str) -> tuple[list[Rule], int]:
    """The group's rules in priority order, and how many there are."""
    rows = list(await s.scalars(select(R).where(R.group_id == group_id).order_by(R.priority)))
    remote = {r.remote_group_id for r in rows if r.remote_group_id is not None}
    names: dict[str, str] = {}
    if remote:
        names = dict((await s.execute(select(G.id, G.name).where(G.id.in_(remote)))).all())
    return [rule_model(r, names) for r in rows], len(rows)


async def get_group(*, svc: Services, ref: str, caller: Caller) -> SecurityGroup:
    """The group with its rules in priority order."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, G, ref, KIND, where=visible_groups(caller))
        rules, count = await _rules(s, row.id)
        return (await GROUPS.tagged(s, [to_model(row, count, rules)]))[0]


async def _locked(
    s: AsyncSession, ref: str, caller: Caller, permission: str, if_match: str | None
) -> SecurityGroupRow:
    """The group ``ref`` the caller sees and may change, its revision and ``updated_at`` bumped
    first thing in the transaction (the row lock serializes concurrent changes of the group).
    With ``If-Match`` the bump is conditional on the version read: ``PreconditionFailed`` if a
    concurrent change got there first."""
    row = await get_row(s, G, ref, KIND, where=visible_groups(caller))
    require(caller, permission, row.project_id)
    check_if_match(if_match, row.id, row.updated_at)
    stmt = update(G).where(G.id == row.id)
    if if_match is not None:
        stmt = stmt.where(G.updated_at == row.updated_at)
    values = {"revision": G.revision + 1, "updated_at": utcnow()}
    result: Any = await s.execute(
        stmt.values(**values).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        if if_match is not None:
            raise PreconditionFailed(
                "the resource changed since you read it (If-Match does not match its ETag)"
            )
        raise NotFound(f"{KIND} {ref!r} not found", kind=KIND, ref=ref)
    await s.refresh(row)
    return row


def _op(
    svc: Services,
    s: AsyncSession,
    type: str,
    group: SecurityGroupRow,
    caller: Caller,
    rule_id: str | None = None,
) -> Any:
    """A finished operation on the group (on one of its rules with ``rule_id``)."""
    return svc.runner.create(
        s,
        type=type,
        target_type=KIND if rule_id is None else RULE_KIND,
        target_id=group.id if rule_id is None else rule_id,
        project_id=group.project_id,
        user_id=caller.user_id,
        done=True,
    )


async def _commit(s: AsyncSession, name: str | None = None) -> None:
    """Commit; a constraint violation is ``NameTaken`` (``name`` given: a group was named) or a
    ``Conflict`` with a concurrent change (a remote group deleted meanwhile)."""
    try:
        await s.commit()
    except IntegrityError as exc:
        if name is not None:
            raise NameTaken(f"a security group named {name!r} exists already", name=name) from exc
        raise Conflict(
            "a concurrent change got in the way (a remote group was deleted?): read the group"
            " again and retry"
        ) from exc


async def _rule_of(s: AsyncSession, group: SecurityGroupRow, rule_id: str) -> SecurityGroupRuleRow:
    rule = await s.scalar(select(R).where(R.id == rule_id, R.group_id == group.id))
    if rule is None:
        raise NotFound(
            f"security group {group.name!r} has no rule {rule_id!r}", kind=RULE_KIND, ref=rule_id
        )
    return rule


# --- use cases -------------------------------------------------------------------------------


async def create_group(*, svc: Services, spec: SecurityGroupCreate, caller: Caller) -> Operation:
    """Record a group in the caller's project (``creation_project``) with ``spec.rules`` at
    priorities 0..n-1 (a rule may name the new group itself as its remote group). Invalid
    rules: ``InvalidInput`` listing them (``rules``: ``[{index, error}]``), nothing recorded."""
    project_id = creation_project(caller, "security_group:create")
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, G, spec.name, KIND, project_id=project_id)
        row = G(
            name=spec.name,
            description=spec.description,
            intra_group=spec.intra_group,
            revision=0,
            project_id=project_id,
            owner_id=caller.user_id,
        )
        s.add(row)
        try:
            await s.flush()
        except IntegrityError as exc:
            raise NameTaken(f"a security group named {spec.name!r} exists already") from exc
        ids, errors = await check_rules(
            s, spec.rules, caller, project_id, existing={}, room=MAX_RULES
        )
        if errors:
            raise invalid_rules(errors, len(spec.rules))
        add_rules(s, row.id, 0, spec.rules, ids)
        op = _op(svc, s, "security_group.create", row, caller)
        await _commit(s, spec.name)
    return op_model(op)


async def update_group(
    *,
    svc: Services,
    ref: str,
    spec: SecurityGroupUpdate,
    caller: Caller,
    if_match: str | None = None,
) -> Operation:
    """Rename, describe, or turn the built-in intra-group rule on or off."""
    async with svc.sessionmaker() as s:
        row = await _locked(s, ref, caller, "security_group:update", if_match)
        if spec.name is not None and spec.name != row.name:
            await ensure_name_free(s, G, spec.name, KIND, project_id=row.project_id)
            row.name = spec.name
        if spec.description is not None:
            row.description = spec.description
        if spec.intra_group is not None:
            row.intra_group = spec.intra_group
        op = _op(svc, s, "security_group.update", row, caller)
        await _commit(s, row.name)
    groups_changed(svc, [row.id])
    return op_model(op)


async def referencing(s: AsyncSession, group_id: str) -> list[str]:
    """Names of the other groups with rules that name ``group_id`` as their remote group."""
    stmt = (
        select(G.name)
        .join(R, R.group_id == G.id)
        .where(R.remote_group_id == group_id, R.group_id != group_id)
        .distinct()
        .order_by(G.name)
    )
    return list(await s.scalars(stmt))


async def group_vms(s: AsyncSession, group_id: str) -> list[str]:
    """Names of the VMs with a NIC in the group."""
    stmt = (
        select(VmRow.name)
        .join(NicRow, NicRow.vm_id == VmRow.id)
        .join(NicSecurityGroupRow, NicSecurityGroupRow.nic_id == NicRow.id)
        .where(NicSecurityGroupRow.group_id == group_id)
        .distinct()
        .order_by(VmRow.name)
    )
    return list(await s.scalars(stmt))


async def delete_group(
    *, svc: Services, ref: str, caller: Caller, if_match: str | None = None
) -> Operation:
    """Delete the group and its rules; ``InUse`` (``groups``) while rules of other groups name
    it (its own rules may)."""
    async with svc.sessionmaker() as s:
        row = await _locked(s, ref, caller, "security_group:delete", if_match)
        if users := await referencing(s, row.id):
            raise InUse(
                f"security group {row.name!r} is the remote group of rules of"
                f" {', '.join(users)}: change or delete those rules first",
                groups=users,
            )
        if vms := await group_vms(s, row.id):
            raise InUse(
                f"security group {row.name!r} is on NICs of VMs {', '.join(vms)}: take it off"
                " them first",
                vms=vms,
            )
        await s.execute(delete(R).where(R.group_id == row.id))
        await s.delete(row)
        op = _op(svc, s, "security_group.delete", row, caller)
        try:
            await s.commit()
        except IntegrityError as exc:  # a rule naming it was added meanwhile
            raise InUse(
                f"security group {row.name!r} became the remote group of another group's rule:"
                " change or delete that rule first"
            ) from exc
    return op_model(op)


async def add_rule(
    *, svc: Services, ref: str, spec: RuleCreate, caller: Caller, if_match: str | None = None
) -> Operation:
    """Add a rule: last, or at ``spec.priority`` (the rules from there move down by one; past
    the end: last). The operation's target is the new rule. ``InvalidState`` when the group
    has ``MAX_RULES`` rules; ``InvalidInput`` for a rule it has already."""
    async with svc.sessionmaker() as s:
        group = await _locked(s, ref, caller, "security_group:update", if_match)
        n = await rule_count(s, group.id)
        if n >= MAX_RULES:
            raise InvalidState(
                f"security group {group.name!r} has {n} rules, the most it may have",
                reason="too_many_rules",
                limit=MAX_RULES,
            )
        remote_id = None
        if spec.remote_group is not None:
            remote_id = await resolve_remote(s, spec.remote_group, caller, group.project_id)
        existing = await rule_keys(s, group.id)
        if (dup := existing.get(rule_key(spec, remote_id))) is not None:
            raise InvalidInput(
                f"security group {group.name!r} has this rule already (priority {dup})",
                priority=dup,
            )
        at = n if spec.priority is None else min(spec.priority, n)
        await shift(s, group.id, at, None, +1)
        rule = rule_row(group.id, at, spec, remote_id)
        s.add(rule)
        await s.flush()
        op = _op(svc, s, "security_group.rule.add", group, caller, rule.id)
        await _commit(s)
    groups_changed(svc, [group.id])
    return op_model(op)


async def update_rule(
    *,
    svc: Services,
    ref: str,
    rule_id: str,
    spec: RuleUpdate,
    caller: Caller,
    if_match: str | None = None,
) -> Operation:
    """Change a rule's action or description, and/or move it to ``spec.priority`` (the rules
    between shift by one; past the end: last)."""
    async with svc.sessionmaker() as s:
        group = await _locked(s, ref, caller, "security_group:update", if_match)
        rule = await _rule_of(s, group, rule_id)
        old, changes = rule.priority, {}
        if spec.action is not None and spec.action.value != rule.action:
            key = (rule.direction, rule.ethertype, rule.protocol, rule.port_min, rule.port_max,
                   rule.remote_cidr, rule.remote_group_id, spec.action.value)  # fmt: skip
            if (dup := (await rule_keys(s, group.id, but=rule.id)).get(key)) is not None:
                raise InvalidInput(
                    f"security group {group.name!r} has this rule already (priority {dup})",
                    priority=dup,
                )
            changes["action"] = spec.action.value
        if spec.description is not None:
            changes["description"] = spec.description
        if changes:
            await s.execute(
                update(R)
                .where(R.id == rule.id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
        if spec.priority is not None:
            n = await rule_count(s, group.id)
            await move(s, group.id, rule.id, old, min(spec.priority, n - 1))
        op = _op(svc, s, "security_group.rule.update", group, caller, rule.id)
        await _commit(s)
    groups_changed(svc, [group.id])
    return op_model(op)


async def delete_rule(
    *, svc: Services, ref: str, rule_id: str, caller: Caller, if_match: str | None = None
) -> Operation:
    """Delete a rule; the ones after it move up (priorities stay 0..n-1). The built-in
    intra-group rule is not a rule row: turn it off with ``intra_group=false``."""
    async with svc.sessionmaker() as s:
        group = await _locked(s, ref, caller, "security_group:update", if_match)
        rule = await _rule_of(s, group, rule_id)
        at = rule.priority
        await s.execute(
            delete(R).where(R.id == rule.id).execution_options(synchronize_session=False)
        )
        await shift(s, group.id, at + 1, None, -1)
        op = _op(svc, s, "security_group.rule.delete", group, caller, rule_id)
        await _commit(s)
    groups_changed(svc, [group.id])
    return op_model(op)


async def export_rules(*, svc: Services, ref: str, caller: Caller) -> RuleExport:
    """The group's rules in priority order, remote groups by name (importable as is)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, G, ref, KIND, where=visible_groups(caller))
        rules, _ = await _rules(s, row.id)
    fields = set(RuleSpec.model_fields)
    return RuleExport(
        group=row.name,
        intra_group=row.intra_group,
        rules=[RuleSpec(**r.model_dump(include=fields)) for r in rules],
    )


async def import_rules(
    *, svc: Services, ref: str, spec: RuleImport, caller: Caller, if_match: str | None = None
) -> Operation:
    """Replace the group's rules with ``spec.rules`` (or append them after its own), all or
    nothing: every rule is checked first (``check_rules``: remote groups, the room left, no
    rule twice) and any problem is ``InvalidInput`` listing the offending rules
    (``rules``: ``[{index, error}]``). ``spec.intra_group`` (when given) is set too."""
    async with svc.sessionmaker() as s:
        group = await _locked(s, ref, caller, "security_group:update", if_match)
        append = spec.mode == "append"
        n = await rule_count(s, group.id) if append else 0
        existing = await rule_keys(s, group.id) if append else {}
        ids, errors = await check_rules(
            s, spec.rules, caller, group.project_id, existing=existing, room=MAX_RULES - n
        )
        if errors:
            raise invalid_rules(errors, len(spec.rules))
        if not append:
            await s.execute(delete(R).where(R.group_id == group.id))
        add_rules(s, group.id, n, spec.rules, ids)
        if spec.intra_group is not None:
            group.intra_group = spec.intra_group
        op = _op(svc, s, "security_group.import", group, caller)
        await _commit(s)
    groups_changed(svc, [group.id])
    return op_model(op)
