"""``POST`` / ``DELETE /<collection>/{ref}/tags`` for every tagged resource kind, generated from
one table so a new kind gets its tag routes by adding one line."""

from typing import Annotated

from fastapi import APIRouter, Query, Response

from corral.api.common import MAX_TAGS, Tag, TagsChange
from corral.api.operations import Operation
from corral.server.http.deps import Svc, accepted, allow
from corral.server.http.kinds import KINDS, Tagged
from corral.server.identity.caller import Caller
from corral.server.services import tag_changes

router = APIRouter()


def _permission(t: Tagged, action: str) -> str:
    """``tag:add`` / ``tag:remove`` in the resource's project; platform kinds: ``<kind>:update``
    (platform admins)."""
    return f"tag:{action}" if t.project_kind else f"{t.kind.name}:update"


def _add_route(t: Tagged) -> None:
    perm = _permission(t, "add")

    # PERMISSION: tag:add (project kinds) / <kind>:update (platform kinds)
    async def add_tags(
        ref: str,
        spec: TagsChange,
        response: Response,
        svc: Svc,
        caller: Annotated[Caller, allow(perm)],
    ) -> Operation:
        return accepted(
            response,
            await tag_changes.change(
                svc=svc,
                kind=t.kind,
                ref=ref,
                caller=caller,
                where=t.visible(caller) if t.visible else None,
                permission=perm,
                add=spec.tags,
            ),
        )

    router.add_api_route(
        f"/{t.collection}/{{ref}}/tags",
        add_tags,
        methods=["POST"],
        status_code=202,
        response_model=Operation,
        tags=[t.collection],
        summary=f"Add tags to a {t.kind.name}",
        operation_id=f"add_{t.kind.name}_tags",
        description="Adds user tags (kept if present already); the resource's `tags` show them.",
    )


def _remove_route(t: Tagged) -> None:
    perm = _permission(t, "remove")

    async def remove_tags(
        ref: str,
        response: Response,
        svc: Svc,
        caller: Annotated[Caller, allow(perm)],
        tag: Annotated[list[Tag], Query(max_length=MAX_TAGS)],
    ) -> Operation:
        return accepted(
            response,
            await tag_changes.change(
                svc=svc,
                kind=t.kind,
                ref=ref,
                caller=caller,
                where=t.visible(caller) if t.visible else None,
                permission=perm,
                remove=tag,
            ),
        )

    router.add_api_route(
        f"/{t.collection}/{{ref}}/tags",
        remove_tags,
        methods=["DELETE"],
        status_code=202,
        response_model=Operation,
        tags=[t.collection],
        summary=f"Remove tags from a {t.kind.name}",
        operation_id=f"remove_{t.kind.name}_tags",
        description="Removes the user tags named by ?tag= (absent ones are ignored).",
    )


for _t in KINDS:
    _add_route(_t)
    _remove_route(_t)
