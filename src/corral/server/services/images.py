"""Images: records in the database, bytes in the image store directory, format checked by qemu-img."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InUse, InvalidInput, InvalidState, NotFound, StorageError
from corral.api.images import Image, ImageCreate, ImageStatus
from corral.api.operations import Operation, OperationStatus
from corral.server.db.tables import ImageRow, OperationRow, VmRow, VolumeRow
from corral.server.identity import quotas
from corral.server.identity.access import creation_project, require, visible
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.recycle import recycles, to_bin

CHUNK = 1024 * 1024
PUBLISH = "image.publish"
"""The operation that sends a host-bound base to the image store (``workflows.image_publish``)."""


def image_model(r: ImageRow) -> Image:
    return Image(
        id=r.id,
        name=r.name,
        status=ImageStatus(r.status),
        format=r.format,
        size_bytes=r.size_bytes,
        virtual_size_bytes=r.virtual_size_bytes,
        sha256=r.sha256,
        source_url=r.source_url,
        source_type=r.source_type,
        source_id=r.source_id,
        host_id=r.host_id,
        parent_id=r.parent_id,
        error=r.error,
        created_at=r.created_at,
        updated_at=r.updated_at,
        project_id=r.project_id,
        owner_id=r.owner_id,
        shared=r.shared,
    )


IMAGES = Kind("image", ImageRow, image_model, specs.IMAGES, Image)


def visible_images(caller: Caller) -> ColumnElement[bool]:
    """The images ``caller`` sees: their projects' (``access.visible``) and public ones."""
    return and_(
        visible(caller, ImageRow, "image", public_if_no_project=True),
        ImageRow.status != ImageStatus.recycled.value,
    )


def _image_project(caller: Caller) -> str | None:
    """Where a new image goes: a platform admin without a project makes a public image."""
    if caller.is_platform_admin and caller.project_id is None:
        return None
    return creation_project(caller, "image:create")


async def _visible_image(s: AsyncSession, ref: str, caller: Caller, permission: str) -> ImageRow:
    row = await get_row(s, ImageRow, ref, "image", where=visible_images(caller))
    require(caller, permission, row.project_id)
    return row


def image_path(svc: Services, image_id: str) -> Path:
    return svc.settings.image_dir / f"{image_id}.img"


async def create_image(*, svc: Services, spec: ImageCreate, caller: Caller) -> Operation:
    """Record an image. With a URL, an ``image.import`` workflow downloads it; without, the image
    waits (``importing``) for its bytes through ``upload``."""
    # never file://: it would let an API user read any file of the server through the image store
    if spec.url is not None and not spec.url.startswith(("http://", "https://")):
        raise InvalidInput("the image URL must be http:// or https://", url=spec.url)
    project_id = _image_project(caller)
    if spec.source is not None:
        return await _capture(svc, spec, project_id, caller)
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, ImageRow, spec.name, "image", project_id=project_id)
        row = ImageRow(
            name=spec.name,
            status=ImageStatus.importing,
            source_url=spec.url,
            project_id=project_id,
            owner_id=caller.user_id,
        )
        s.add(row)
        await s.flush()
        await quotas.adjust(s, project_id, images=1)
        op = svc.runner.create(
            s,
            type="image.import",
            target_type="image",
            target_id=row.id,
            lock_key=f"image:{row.id}",
            params={"image_id": row.id, "url": spec.url},
            done=spec.url is None,
            project_id=project_id,
            user_id=caller.user_id,
        )
        await s.commit()
    if spec.url is not None:
        svc.runner.launch(op)
    return op_model(op)


async def _capture(
    svc: Services, spec: ImageCreate, project_id: str | None, caller: Caller
) -> Operation:
    """Record an image captured from ``spec.source`` and queue ``image.capture``."""
    from corral.server.services.image_capture import check_source, new_image
    from corral.server.workflows.image_capture import IMAGE_CAPTURE

    assert spec.source is not None
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, ImageRow, spec.name, "image", project_id=project_id)
        src = await check_source(s, spec.source, caller)
        row = new_image(spec.name, project_id, caller.user_id, src)
        s.add(row)
        await s.flush()
        await quotas.adjust(s, project_id, images=1)
        op = svc.runner.create(
            s,
            type=IMAGE_CAPTURE.type,
            target_type="image",
            target_id=row.id,
            lock_key=src.lock_key,
            params={"image_id": row.id, **src.params},
            project_id=project_id,
            user_id=caller.user_id,
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def qemu_img_info(path: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", "info", "--output=json", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise InvalidInput(
            "the file is not a disk image qemu-img understands", stderr=err.decode()[-500:]
        )
    info: dict[str, Any] = json.loads(out)
    return info


ISO_MAGIC_OFFSET = 16 * 2048 + 1
"""An ISO 9660 image has "CD001" here: in its first volume descriptor (sector 16), after the
type byte. ``qemu-img`` calls such an image raw."""


def is_iso9660(path: Path) -> bool:
    """Whether the file is an ISO 9660 image (a CD/DVD image: format ``iso``)."""
    with path.open("rb") as f:
        f.seek(ISO_MAGIC_OFFSET)
        return f.read(5) == b"CD001"


@dataclass(frozen=True)
class Received:
    """Bytes written into the image store and checked (``receive``)."""

    size_bytes: int
    sha256: str
    format: str
    virtual_size_bytes: int

    def columns(self) -> dict[str, Any]:
        """The image row's columns these bytes set."""
        return {
            "format": self.format,
            "size_bytes": self.size_bytes,
            "virtual_size_bytes": self.virtual_size_bytes,
            "sha256": self.sha256,
        }


async def receive(
    tmp: Path, final: Path, chunks: AsyncIterator[bytes], progress: Any = None
) -> Received:
    """Stream ``chunks`` into ``tmp`` (hashed as written), check it with qemu-img (not empty,
    qcow2, raw or ISO, no backing file) and rename it to ``final`` (0644). On any failure
    ``tmp`` is removed and the error raised (``InvalidInput``; ``StorageError`` for I/O)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with tmp.open("wb") as f:
            pending = bytearray()  # small network chunks gathered: one thread hop per MiB
            async for chunk in chunks:
                size += len(chunk)
                pending += chunk
                if len(pending) >= CHUNK:
                    await asyncio.to_thread(_write_and_hash, f, digest, bytes(pending))
                    pending.clear()
                    if progress is not None:
                        await progress(size)
            if pending:
                await asyncio.to_thread(_write_and_hash, f, digest, bytes(pending))
                if progress is not None:
                    await progress(size)
        if size == 0:
            raise InvalidInput("the image is empty")
        info = await qemu_img_info(tmp)
        fmt = str(info.get("format", "raw"))
        if fmt not in ("qcow2", "raw"):
            raise InvalidInput(f"image format {fmt} is not supported (qcow2 or raw)", format=fmt)
        if fmt == "raw" and await asyncio.to_thread(is_iso9660, tmp):
            fmt = "iso"
        if info.get("backing-filename"):
            raise InvalidInput("images with a backing file are not accepted")
        os.chmod(tmp, 0o644)
        await asyncio.to_thread(tmp.replace, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # noqa: ASYNC240 (inline: survives cancellation)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot store the image: {exc}") from exc
        raise
    virtual = int(info.get("virtual-size", size))
    return Received(size, digest.hexdigest(), fmt, virtual)


async def store_bytes(
    svc: Services, image_id: str, chunks: AsyncIterator[bytes], progress: Any = None
) -> None:
    """Stream bytes into the image store, check them with qemu-img and mark the image ready.
    On any failure the partial file is removed and the image is marked ``error``."""
    final = image_path(svc, image_id)
    try:
        got = await receive(final.with_suffix(".part"), final, chunks, progress)
    except BaseException:
        async with svc.sessionmaker.begin() as s:
            row = await s.get(ImageRow, image_id)
            if row is not None:
                row.status = ImageStatus.error
        raise
    async with svc.sessionmaker.begin() as s:
        row = await get_row(s, ImageRow, image_id, "image", by_name=False)
        row.status = ImageStatus.ready
        for column, value in got.columns().items():
            setattr(row, column, value)


def _write_and_hash(f: BinaryIO, digest: Any, chunk: bytes) -> None:
    digest.update(chunk)
    f.write(chunk)


async def upload(
    *, svc: Services, ref: str, chunks: AsyncIterator[bytes], caller: Caller
) -> Operation:
    async with svc.sessionmaker() as s:
        row = await _visible_image(s, ref, caller, "image:update")
    if row.status != ImageStatus.importing or row.source_url or row.source_type:
        raise InvalidState(f"image {row.name!r} is {row.status}; upload needs a new image")
    await store_bytes(svc, row.id, chunks)
    async with svc.sessionmaker() as s:
        op = svc.runner.create(
            s,
            type="image.upload",
            target_type="image",
            target_id=row.id,
            done=True,
            project_id=row.project_id,
            user_id=caller.user_id,
        )
        await s.commit()
    return op_model(op)


async def store_from_agent(
    *, svc: Services, image_id: str, host_id: str, chunks: AsyncIterator[bytes]
) -> None:
    """Store the bytes the agent of ``host_id`` sends for an image: a captured disk (the agent
    runs the image's ``image.capture``: the image is ``importing``, with a source; ready once
    stored, ``error`` if the bytes are refused) or the cached copy of a host-bound base being
    published (``image.publish`` running, sent by the image's host: ``store_published``).
    ``InvalidState`` for any other image, ``NotFound`` for none."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, ImageRow, image_id, "image", by_name=False)
        publishing = (
            row.host_id == host_id
            and row.parent_id is None
            and await publish_operation(s, row.id, (OperationStatus.running,)) is not None
        )
    if row.status == ImageStatus.importing and row.source_type is not None:
        await store_bytes(svc, image_id, chunks)
    elif publishing:
        await store_published(svc, image_id, chunks)
    else:
        raise InvalidState(
            f"image {row.name!r} waits neither for a captured disk nor for its publication",
            image=row.name,
        )


async def store_published(svc: Services, image_id: str, chunks: AsyncIterator[bytes]) -> None:
    """Store the bytes of a host-bound base being published (a unique temporary name, then
    ``image_path``) and record their ``sha256``, size and format on the image; its status and
    ``host_id`` do not change here (``image.publish`` clears ``host_id`` once it has compared
    the digest with the agent's). A failure changes nothing (no file, the row as it was).
    ``NotFound`` if the image was deleted meanwhile (its file is then removed)."""
    final = image_path(svc, image_id)
    tmp = final.with_name(f".{image_id}.{secrets.token_hex(4)}.publish.part")
    got = await receive(tmp, final, chunks)
    async with svc.sessionmaker.begin() as s:
        done: Any = await s.execute(
            update(ImageRow).where(ImageRow.id == image_id).values(**got.columns())
        )
    if done.rowcount != 1:
        final.unlink(missing_ok=True)
        raise NotFound("the image was deleted while it was published", image_id=image_id)


async def publish_operation(
    s: AsyncSession,
    image_id: str,
    statuses: tuple[OperationStatus, ...] = (OperationStatus.queued, OperationStatus.running),
) -> str | None:
    """The id of an ``image.publish`` operation of the image in one of ``statuses``; None."""
    found = await s.scalar(
        select(OperationRow.id)
        .where(
            OperationRow.target_id == image_id,
            OperationRow.type == PUBLISH,
            OperationRow.status.in_([st.value for st in statuses]),
        )
        .limit(1)
    )
    return found


async def delete_image(
    *, svc: Services, ref: str, caller: Caller, expunge: bool = False
) -> Operation:
    """Delete an image nothing uses (``InUse`` naming the users otherwise): a ready one goes to
    the recycle bin under the ``delayed`` and ``never`` policies (unless ``expunge``), else it
    is deleted at once (row and file). A full clone's base being published (``image.publish``)
    may go too: the publication then finds it gone and leaves no file behind."""
    async with svc.sessionmaker() as s:
        row = await _visible_image(s, ref, caller, "image:delete")
        await _check_unused(s, row)
        if row.status == ImageStatus.ready and await recycles(svc, s, "image", expunge):
            await to_bin(svc, s, "image", row, deleted_by=caller.user_id)
            op = svc.runner.create(
                s,
                type="image.recycle",
                target_type="image",
                target_id=row.id,
                done=True,
                project_id=row.project_id,
                user_id=caller.user_id,
            )
            await s.commit()
            return op_model(op)
        op = await expunge_image(svc, s, row, caller.user_id)
        await s.commit()
    drop_file(svc, row.id)
    return op_model(op)


async def _check_unused(s: AsyncSession, row: ImageRow) -> None:
    """``InUse`` (naming the users) if a VM (also one in the bin), a CD-ROM drive, a volume
    still to be copied or a linked-clone layer uses the image."""
    n = await s.scalar(select(func.count()).where(VmRow.image_id == row.id))
    if n:
        raise InUse(f"image {row.name!r} is used by {n} VM(s)", vms=n)
    users: list[tuple[Any, str, str]] = [
        (
            select(VmRow.name).where(VmRow.cdrom_image_id == row.id).order_by(VmRow.name),
            "vms",
            "is in the CD-ROM drive of VM(s) {}: eject it first",
        ),
        (
            select(VolumeRow.name)
            .where(VolumeRow.image_id == row.id, VolumeRow.instantiated.is_(False))
            .order_by(VolumeRow.name),
            "volumes",
            "is still to be copied into volume(s) {} (at their first attach): delete or attach"
            " them first",
        ),
        (
            select(ImageRow.name).where(ImageRow.parent_id == row.id).order_by(ImageRow.name),
            "images",
            "is under the linked-clone layer(s) {}: delete them first",
        ),
    ]
    for stmt, key, why in users:
        if names := list(await s.scalars(stmt)):
            raise InUse(f"image {row.name!r} " + why.format(", ".join(names)), **{key: names})


async def expunge_image(
    svc: Services, s: AsyncSession, row: ImageRow, user_id: str | None
) -> OperationRow:
    """Delete the image's row in ``s`` and give its quota back (the caller commits, then
    removes the file with ``drop_file``); returns the finished ``image.delete`` operation."""
    await s.execute(update(VolumeRow).where(VolumeRow.image_id == row.id).values(image_id=None))
    await quotas.adjust(s, row.project_id, images=-1)
    await s.delete(row)
    return svc.runner.create(
        s,
        type="image.delete",
        target_type="image",
        target_id=row.id,
        done=True,
        project_id=row.project_id,
        user_id=user_id,
    )


def drop_file(svc: Services, image_id: str) -> None:
    """Remove a deleted image's file from the store (absent: nothing)."""
    image_path(svc, image_id).unlink(missing_ok=True)


async def ready_path(
    *, svc: Services, ref: str, caller: Caller | None = None
) -> tuple[ImageRow, Path]:
    """A ready image's file; ``caller`` None: an agent (any image), else what the caller sees."""
    async with svc.sessionmaker() as s:
        where = visible_images(caller) if caller is not None else None
        row = await get_row(s, ImageRow, ref, "image", where=where)
    if row.status != ImageStatus.ready:
        raise InvalidState(f"image {row.name!r} is {row.status}, not ready")
    if row.host_id is not None:
        what = (
            "a linked-clone layer kept on its host only"
            if row.parent_id is not None
            else "a clone's base kept on its host only until it is published"
        )
        raise InvalidState(
            f"image {row.name!r} is {what}, not in the image store",
            image=row.name,
            host_id=row.host_id,
            reason="layer" if row.parent_id is not None else "unpublished",
        )
    return row, image_path(svc, row.id)
