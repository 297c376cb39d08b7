"""The ``image.publish`` task: the copy of an image in this host's image cache sent to the
server's image store.

A full clone's base is captured with ``ImageCaptureTask(publish=False)``: converted, fsync'd
and adopted into the cache, nothing sent, so the clones on this host start at once. The server
then asks for this task: the cached file is streamed to ``PUT upload_path`` and hashed as it is
read (one pass); the server stores the bytes, computes the same SHA-256 and, if they agree,
makes the image usable on every host.

Where the cached copy is: the pool's ``media_path`` of the image, asked with a fetcher that
refuses (``NotFound``): a cached image is answered without a download, an absent one is not
fetched. A simulated pool answers ``sim://`` names: its cached bytes are then
``<image_cache>/<image_id>.img``; one without an image cache keeps no bytes at all and sends a
stand-in (``b"simulated image <image_id>\\n"``), as its captures send a stand-in disk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.agent.capture import Uploader
from corral.agent.storage.driver import VolumeDriver
from corral.api.agent import ImagePublishTask, ImageRef
from corral.api.errors import NotFound, StorageError

SIMULATED = "sim://"
"""How a simulated pool's media paths begin (they name no file)."""


class ImagePublish:
    """Runs ``image.publish`` tasks; see the module docstring."""

    def __init__(self, *, volumes: VolumeDriver, upload: Uploader) -> None:
        self.volumes = volumes
        self.upload = upload

    async def run(self, task: ImagePublishTask) -> dict[str, object]:
        """Send the cached copy of ``task.image_id``; returns ``{"size_bytes", "sha256"}`` of
        the bytes sent. ``NotFound`` if it is not cached here, the server's errors."""
        ref = ImageRef(
            id=task.image_id,
            sha256="",
            size_bytes=0,
            virtual_size_bytes=0,
            format=task.format,
            download_path="",
        )
        where = await self.volumes.media_path(ref, _not_cached)
        if not where.startswith(SIMULATED):
            size, digest = await self.upload(task.upload_path, Path(where))
            return {"size_bytes": size, "sha256": digest}
        return await self._simulated(task)

    async def _simulated(self, task: ImagePublishTask) -> dict[str, object]:
        """A simulated pool's copy: its cache file, or a stand-in written into a staging file
        (removed afterwards) when the pool keeps no bytes."""
        cache = getattr(self.volumes, "image_cache", None)
        if isinstance(cache, Path):
            cached = cache / f"{task.image_id}.img"
            if not await asyncio.to_thread(cached.is_file):
                raise _absent(task.image_id)
            size, digest = await self.upload(task.upload_path, cached)
            return {"size_bytes": size, "sha256": digest}
        stand_in = self.volumes.staging_path(f"{task.image_id}-publish")
        try:
            content = f"simulated image {task.image_id}\n".encode()
            await asyncio.to_thread(stand_in.write_bytes, content)
            size, digest = await self.upload(task.upload_path, stand_in)
        except OSError as exc:
            raise StorageError(
                f"cannot write a stand-in of image {task.image_id}: {exc}", path=str(stand_in)
            ) from exc
        finally:
            stand_in.unlink(missing_ok=True)  # inline: survives cancellation
        return {"size_bytes": size, "sha256": digest}


def _absent(image_id: str) -> NotFound:
    return NotFound(f"image {image_id} is not in this host's image cache", image_id=image_id)


async def _not_cached(image: ImageRef, dest: Path) -> None:
    """The fetcher of ``media_path``: an image that is not cached here is not downloaded."""
    raise _absent(image.id)
