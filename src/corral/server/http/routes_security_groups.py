"""Routes for security groups (``/security-groups``), their rules (``…/{ref}/rules``) and the
export and import of rules (``…/{ref}/export``, ``…/{ref}/import``)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError

from corral.api.common import Page
from corral.api.errors import InvalidInput
from corral.api.operations import Operation
from corral.api.security_groups import (
    RuleCreate,
    RuleExport,
    RuleImport,
    RuleUpdate,
    SecurityGroup,
    SecurityGroupCreate,
    SecurityGroupUpdate,
    rule_errors,
)
from corral.server.http.deps import IfMatch, Listing, Svc, accepted, allow, listed
from corral.server.http.errors import validation_body
from corral.server.http.versioning import VersionedRoute
from corral.server.identity.caller import Caller
from corral.server.services import security_groups as groups
from corral.server.services.sg_rules import visible_groups


class RulesRoute(VersionedRoute):
    """A route whose refused body lists the offending rules: a ``422 invalid_input`` for a body
    whose ``rules`` are invalid also has ``context.rules``: ``[{index, error}]`` (beside
    ``context.errors``), as the checks the service makes after validation do."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def indexed(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                offending = rule_errors(exc.errors())
                if not offending:
                    raise
                body = validation_body(exc.errors())
                raise InvalidInput(body.message, **body.context, rules=offending) from exc

        return indexed


router = APIRouter(route_class=RulesRoute)
T: list[str | Enum] = ["security-groups"]
A: dict[str, Any] = {"status_code": 202, "response_model": Operation, "tags": T}
RULE = "/security-groups/{ref}/rules/{rule_id}"


@router.get("/security-groups", response_model=Page[SecurityGroup], tags=T)
async def list_security_groups(
    svc: Svc, caller: Annotated[Caller, allow("security_group:list")], q: Listing
) -> Any:
    """Security groups with their ``rule_count`` (GET one group for its rules)."""
    return listed(await groups.GROUPS.list(svc.sessionmaker, q, visible_groups(caller)))


@router.get("/security-groups/{ref}", response_model=SecurityGroup, tags=T)
async def get_security_group(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("security_group:get")]
) -> SecurityGroup:
    """The group with its rules in priority order (0 first)."""
    return await groups.get_group(svc=svc, ref=ref, caller=caller)


@router.post("/security-groups", **A)
async def create_security_group(
    spec: SecurityGroupCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:create")],
) -> Operation:
    """A group in the caller's project (names are unique per project), with its first rules at
    priorities 0..n-1; invalid rules are listed in ``context.rules`` and nothing is created."""
    return accepted(response, await groups.create_group(svc=svc, spec=spec, caller=caller))


@router.patch("/security-groups/{ref}", **A)
async def update_security_group(
    ref: str,
    spec: SecurityGroupUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Rename, describe, or turn the built-in rule (members talk to each other) on or off."""
    op = await groups.update_group(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.delete("/security-groups/{ref}", **A)
async def delete_security_group(
    ref: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:delete")],
    if_match: IfMatch = None,
) -> Operation:
    """Delete the group and its rules; ``409 in_use`` (``context.groups``) while rules of other
    groups name it as their remote group."""
    op = await groups.delete_group(svc=svc, ref=ref, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.post("/security-groups/{ref}/rules", **A)
async def add_security_group_rule(
    ref: str,
    spec: RuleCreate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Add a rule, last or at ``priority`` (the rules from there move down one). The
    operation's ``target_id`` is the new rule's id."""
    op = await groups.add_rule(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)


@router.patch(RULE, **A)
async def update_security_group_rule(
    ref: str,
    rule_id: str,
    spec: RuleUpdate,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Change a rule's action or description, or move it to ``priority`` (the rules between
    shift by one)."""
    op = await groups.update_rule(
        svc=svc, ref=ref, rule_id=rule_id, spec=spec, caller=caller, if_match=if_match
    )
    return accepted(response, op)


@router.delete(RULE, **A)
async def delete_security_group_rule(
    ref: str,
    rule_id: str,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Delete a rule; the ones after it move up one."""
    op = await groups.delete_rule(
        svc=svc, ref=ref, rule_id=rule_id, caller=caller, if_match=if_match
    )
    return accepted(response, op)


@router.get("/security-groups/{ref}/export", response_model=RuleExport, tags=T)
async def export_security_group_rules(
    ref: str, svc: Svc, caller: Annotated[Caller, allow("security_group:get")]
) -> RuleExport:
    """The group's rules in priority order, remote groups by name: a valid import body."""
    return await groups.export_rules(svc=svc, ref=ref, caller=caller)


@router.post("/security-groups/{ref}/import", **A)
async def import_security_group_rules(
    ref: str,
    spec: RuleImport,
    response: Response,
    svc: Svc,
    caller: Annotated[Caller, allow("security_group:update")],
    if_match: IfMatch = None,
) -> Operation:
    """Replace the group's rules (``mode=append``: add them after its own), all or nothing:
    every rule is checked first; ``422 invalid_input`` lists each offending rule in
    ``context.rules`` (``[{index, error}]``) and changes nothing."""
    op = await groups.import_rules(svc=svc, ref=ref, spec=spec, caller=caller, if_match=if_match)
    return accepted(response, op)
