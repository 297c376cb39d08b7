"""Optimistic concurrency for every resource kind: the ``ETag`` header on ``GET …/{ref}`` and the
``If-Match`` check on changes (``412 precondition_failed`` when the resource changed since the
caller read it). Generic: routers use ``VersionedRoute``; changing routes add ``IF_MATCH`` to
their dependencies."""

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from corral.api.errors import NotFound
from corral.server.http.deps import IfMatch, Svc, current_caller
from corral.server.http.kinds import BY_COLLECTION
from corral.server.identity.access import check_if_match
from corral.server.identity.caller import Caller
from corral.server.services.listing import get_row


def _collection(request: Request) -> str:
    """``clusters`` for a request to ``/api/v1/clusters/…``."""
    parts = request.scope.get("path", "").split("/")
    return parts[3] if len(parts) > 3 else ""


async def _check(
    request: Request,
    svc: Svc,
    caller: Annotated[Caller, Depends(current_caller)],
    if_match: IfMatch = None,
) -> None:
    """``PreconditionFailed`` unless ``If-Match`` (when sent) names the current version of the
    resource ``{ref}`` of the route's collection. A resource the caller cannot see is left to the
    route (its 404), so existence never leaks through a 412."""
    if if_match is None:
        return
    tagged = BY_COLLECTION.get(_collection(request))
    ref = request.path_params.get("ref")
    if tagged is None or ref is None:
        return
    kind = tagged.kind
    where = tagged.visible(caller) if tagged.visible else None
    async with svc.sessionmaker() as s:
        try:
            row = await get_row(s, kind.table, ref, kind.name, where=where)
        except NotFound:
            return
        check_if_match(if_match, row.id, row.updated_at)


IF_MATCH = Depends(_check)
"""Route dependency: the ``If-Match`` precondition of a change to ``…/{collection}/{ref}``."""


def _etag(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    etag = doc.get("etag") if isinstance(doc, dict) else None
    return etag if isinstance(etag, str) and etag else None


class VersionedRoute(APIRoute):
    """A route whose successful ``GET`` of one resource (``…/{ref}``) carries the resource's
    ``etag`` as the ``ETag`` header."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if "GET" not in (self.methods or set()) or not self.path.endswith("/{ref}"):
            return handler

        async def with_etag(request: Request) -> Response:
            response = await handler(request)
            if response.status_code == 200 and "ETag" not in response.headers:
                etag = _etag(bytes(response.body))
                if etag is not None:
                    response.headers["ETag"] = etag
            return response

        return with_etag
