"""Test doubles for the volume drivers: image references and an in-memory image source."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from corral.api.agent import ImageRef


def image_ref(
    data: bytes, *, image_id: str = "img-1", fmt: str = "raw", vsize: int = 0
) -> ImageRef:
    return ImageRef(
        id=image_id,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        virtual_size_bytes=vsize or len(data),
        format=fmt,
        download_path=f"/api/v1/agent/images/{image_id}/data",
    )


class MemoryFetcher:
    """Serves image bytes by image id; counts calls; can fail or stall on demand."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.calls: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.delay = 0.0
        self.started = asyncio.Event()

    def serve(self, data: bytes, **ref: Any) -> ImageRef:
        """Make ``data`` fetchable and return its reference (see ``image_ref``)."""
        image = image_ref(data, **ref)
        self.blobs[image.id] = data
        return image

    async def __call__(self, image: ImageRef, dest: Path) -> None:
        """Write half of the bytes, wait ``delay``, raise ``error`` if set, else finish."""
        self.calls[image.id] += 1
        self.started.set()
        data = self.blobs[image.id]
        await asyncio.to_thread(dest.write_bytes, data[: len(data) // 2])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        await asyncio.to_thread(dest.write_bytes, data)


def all_files(root: Path) -> list[str]:
    """Every file and directory under ``root`` (relative), sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
