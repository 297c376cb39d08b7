"""image.capture: an image made from a VM's root disk, a volume or a snapshot.

The request records the image (``importing``, with ``source_type``/``source_id``), charges the
``images`` quota and, for a volume or snapshot source, moves the volume to ``capturing``. The
``capture`` step has the agent of a host that reaches the disk copy it (chain flattened) and
send it to ``PUT /agent/images/{id}/data``; the server stores it, checks it and marks the image
``ready``. The step then checks that the server holds the bytes the agent sent (same SHA-256).
Undo (and a failure): the image's file and row go and the quota is given back, so a failed
capture leaves nothing; the volume goes back to ``available``/``in_use``.

``capture`` and ``drop_image`` are also the first step of ``vm.clone``. A full clone's base
captured with ``publish_later`` (params) is not sent: the agent keeps it (fsync'd) in its
host's image cache only, and the image becomes ``ready`` bound to that host (``host_id``, no
``sha256`` yet) until ``image.publish`` sends it to the store.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from corral.api.agent import ImageCaptureTask
from corral.api.errors import CorralError, InUse, NotFound, StorageError
from corral.api.images import ImageStatus
from corral.server.db.tables import ImageRow, VmRow
from corral.server.identity import quotas
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.snapshot_common import file_ref
from corral.server.workflows.volume_common import load_volume, settle

CAPTURED_FORMAT = "qcow2"
"""What an agent makes of a captured disk (``corral.agent.capture``)."""
GIB = 1 << 30


def upload_path(image_id: str) -> str:
    """Where the agent sends a captured image's bytes (``routes_agent``)."""
    return f"/api/v1/agent/images/{image_id}/data"


async def capture(ctx: Ctx) -> dict[str, Any]:
    """Params: ``image_id``, ``host_id`` and either ``vm_id`` (root disk) or ``volume_id`` with
    ``file`` (the snapshot file; None: the volume's active file); ``publish_later`` (a VM's
    root disk only, with ``disk_gb``): keep the copy on ``host_id`` (``keep_on_host``)."""
    image_id = ctx.params["image_id"]
    later = bool(ctx.params.get("publish_later") and ctx.params.get("vm_id"))
    await ctx.progress(10, "copying the disk")
    if vm_id := ctx.params.get("vm_id"):
        task = ImageCaptureTask(
            image_id=image_id, upload_path=upload_path(image_id), vm_id=vm_id, publish=not later
        )
    else:
        vol, pool = await load_volume(ctx)
        name = ctx.params.get("file") or vol.pool_name
        task = ImageCaptureTask(
            image_id=image_id,
            upload_path=upload_path(image_id),
            volume=file_ref(ctx, vol, pool, name),
        )
    result = await agent_task(ctx, ctx.params["host_id"], "capture", task)
    if later:
        return await keep_on_host(ctx, int(result["size_bytes"]))
    async with ctx.deps.sessionmaker() as s:
        row = await s.get(ImageRow, image_id)
    if row is None or row.status != ImageStatus.ready or row.sha256 != result.get("sha256"):
        raise StorageError(
            "the image store does not hold the bytes the agent sent",
            image_id=image_id,
            sent_sha256=result.get("sha256"),
            stored_sha256=row.sha256 if row is not None else None,
        )
    await ctx.progress(60, "image stored")
    return {"sha256": row.sha256, "size_bytes": row.size_bytes}


async def keep_on_host(ctx: Ctx, size_bytes: int) -> dict[str, Any]:
    """Mark the image captured without upload ``ready`` on the capture's host (``host_id``):
    a standalone qcow2 of ``size_bytes``, virtually the source's ``disk_gb``, no ``sha256``
    (computed when it is published). ``NotFound`` if the row is gone."""
    image_id = ctx.params["image_id"]
    async with ctx.deps.sessionmaker.begin() as s:
        done: Any = await s.execute(
            update(ImageRow)
            .where(ImageRow.id == image_id)
            .values(
                status=ImageStatus.ready,
                format=CAPTURED_FORMAT,
                size_bytes=size_bytes,
                virtual_size_bytes=int(ctx.params["disk_gb"]) * GIB,
                sha256=None,
                host_id=ctx.params["host_id"],
                error=None,
            )
        )
    if done.rowcount != 1:
        raise NotFound("the captured image is gone", image_id=image_id)
    await ctx.progress(40, "image kept on the source's host")
    return {"sha256": None, "size_bytes": size_bytes, "host_id": ctx.params["host_id"]}


async def drop_image(ctx: Ctx) -> None:
    """Delete the captured image's file and row and give its quota back (absent: nothing).
    ``InUse`` if a VM was made from it meanwhile (it then stays)."""
    from corral.server.services.images import image_path

    image_id = ctx.params["image_id"]
    async with ctx.deps.sessionmaker.begin() as s:
        row = await s.get(ImageRow, image_id)
        if row is None:
            return
        users = await s.scalar(select(func.count()).where(VmRow.image_id == image_id))
        if users:
            raise InUse(f"image {row.name!r} is used by {users} VM(s)", vms=users)
        await quotas.adjust(s, row.project_id, images=-1)
        await s.delete(row)
    image_path(ctx.deps, image_id).unlink(missing_ok=True)


async def _settle_volume(ctx: Ctx) -> None:
    if ctx.params.get("volume_id"):
        await settle(ctx)


async def _finish(ctx: Ctx) -> dict[str, Any]:
    await _settle_volume(ctx)
    return {"image_id": ctx.params["image_id"]}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    await _settle_volume(ctx)


IMAGE_CAPTURE = Workflow(
    "image.capture",
    steps=(Step("capture", capture, drop_image), Step("finish", _finish, NO_UNDO)),
    on_failure=_on_failure,
)
