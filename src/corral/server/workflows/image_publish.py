"""image.publish: a full clone's base, so far only in its source host's image cache, sent to the
image store so that every host can use it.

A full clone captures its base without sending it (``ImageCaptureTask(publish=False)``): the
image is ``ready`` but bound to the source's host (``host_id`` set, ``parent_id`` None, no
``sha256``), and the clones are made there at once. Then ``vm.clone`` queues this operation
(target: the image, lock ``image:<id>``) and does not wait for it.

Params: ``image_id``, ``host_id`` (the host whose cache holds the copy).

Step ``publish`` (the point of no return: retried, never rolled back; resumed after a server
restart): nothing to do if the image is gone (deleted for good, also while it is sent: its
file is then removed) or not host-bound any more. Else the agent task
``image.publish`` sends the cached copy to ``PUT /agent/images/{id}/data`` (accepted only from
that host while this operation runs: ``images.store_from_agent``), the server stores it and
records its SHA-256, size and format (``images.store_published``); the step then checks that
the stored digest and size are the agent's and clears ``host_id`` and ``error``: the image is
usable on every host, downloadable, copyable into volumes.

A failure (after the retries): the stored file goes, ``sha256`` is cleared and the error's
message is set as the image's ``error``; the image stays bound to its host, where it keeps
working (its VMs, new VMs placed there). There is no retry endpoint: a new full clone of a VM
made from it publishes a new base (see docs/images.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import ImagePublishTask
from corral.api.errors import CorralError, InvalidState, StorageError
from corral.server.db.tables import ImageRow, OperationRow
from corral.server.services.images import PUBLISH, drop_file
from corral.server.services.operations import OperationRunner
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.image_capture import upload_path
from corral.server.workflows.vm_common import repeatable_task


def new_publish(
    runner: OperationRunner, s: AsyncSession, image: ImageRow, user_id: str | None
) -> OperationRow:
    """Add a queued ``image.publish`` of the host-bound ``image`` to the session ``s``; the
    caller commits, then launches it (``runner.launch``)."""
    assert image.host_id is not None and image.parent_id is None
    return runner.create(
        s,
        type=PUBLISH,
        target_type="image",
        target_id=image.id,
        lock_key=f"image:{image.id}",
        params={"image_id": image.id, "host_id": image.host_id},
        project_id=image.project_id,
        user_id=user_id,
    )


async def _load(ctx: Ctx) -> ImageRow | None:
    async with ctx.deps.sessionmaker() as s:
        row: ImageRow | None = await s.get(ImageRow, ctx.params["image_id"])
    return row


async def _publish(ctx: Ctx) -> dict[str, Any]:
    image_id = ctx.params["image_id"]
    row = await _load(ctx)
    if row is None or row.host_id is None:
        return {"published": False, "reason": "deleted" if row is None else "not host-bound"}
    if row.parent_id is not None:
        raise InvalidState(
            f"image {row.name!r} is a linked-clone layer: it is kept on its host only",
            image=row.name,
        )
    await ctx.progress(10, "sending the image to the image store")
    task = ImagePublishTask(
        image_id=image_id, upload_path=upload_path(image_id), format=row.format or "qcow2"
    )
    try:
        sent = await repeatable_task(ctx, ctx.params["host_id"], "publish", task)
    except CorralError:
        if await _load(ctx) is not None:
            raise
        sent = {}  # deleted meanwhile: the server refused the bytes
    return await _check_and_release(ctx, sent)


async def _check_and_release(ctx: Ctx, sent: dict[str, Any]) -> dict[str, Any]:
    """Clear ``host_id`` if the store holds the bytes the agent sent (``StorageError``
    otherwise); an image deleted meanwhile: its file removed, nothing else."""
    image_id = ctx.params["image_id"]
    async with ctx.deps.sessionmaker.begin() as s:
        row = await s.get(ImageRow, image_id)
        if row is None:
            drop_file(ctx.deps, image_id)
            return {"published": False, "reason": "deleted"}
        if row.sha256 is None or (row.sha256, row.size_bytes) != (
            sent.get("sha256"),
            sent.get("size_bytes"),
        ):
            raise StorageError(
                "the image store does not hold the bytes the agent sent",
                image_id=image_id,
                sent_sha256=sent.get("sha256"),
                stored_sha256=row.sha256,
            )
        row.host_id = None
        row.error = None
    await ctx.progress(100, "published")
    return {"published": True, "sha256": sent["sha256"], "size_bytes": sent["size_bytes"]}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """The image stays on its host: no stored file, no ``sha256``, ``error`` set."""
    image_id = ctx.params["image_id"]
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(ImageRow)
            .where(ImageRow.id == image_id, ImageRow.host_id.is_not(None))
            .values(sha256=None, error=f"publish failed: {err.message}"[:2000])
        )
        row = await s.get(ImageRow, image_id)
        keep_file = row is not None and row.host_id is None  # published after all
    if not keep_file:
        drop_file(ctx.deps, image_id)


IMAGE_PUBLISH = Workflow(
    PUBLISH,
    steps=(Step("publish", _publish, NO_UNDO),),
    on_failure=_on_failure,
    forward_from="publish",
)
