"""Adding and removing the user tags of one resource through the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement

from corral.api.operations import Operation
from corral.server.identity.access import require
from corral.server.identity.caller import Caller
from corral.server.services import tags
from corral.server.services.context import Services
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model


async def change(
    *,
    svc: Services,
    kind: Kind[Any, Any],
    ref: str,
    caller: Caller,
    where: ColumnElement[bool] | None,
    permission: str,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> Operation:
    """Add ``add`` and remove ``remove`` (user tags) on the resource ``ref`` of ``kind`` among the
    rows ``where`` selects (what the caller sees: ``NotFound`` otherwise), if ``caller`` holds
    ``permission`` in the resource's project (rows without a project: platform admins only).
    Records and returns a finished operation (``<kind>.tag``) like every mutation; the new tags
    are in the resource's ``tags``. ``Conflict`` (``too_many_tags``) changes nothing."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, kind.table, ref, kind.name, where=where)
        require(caller, permission, getattr(row, "project_id", None))
        if add:
            await tags.add(s, kind.spec.name, row.id, add)
        if remove:
            await tags.remove(s, kind.spec.name, row.id, remove)
        op = svc.runner.create(
            s,
            type=f"{kind.spec.name}.tag",
            target_type=kind.spec.name,
            target_id=row.id,
            done=True,
            project_id=getattr(row, "project_id", None),
            user_id=caller.user_id,
        )
        await s.commit()
        return to_model(op)
