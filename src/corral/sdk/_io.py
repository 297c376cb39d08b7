"""Writing to local files from the SDK: ``sync_write`` for the blocking client and its twin
``async_write`` (``corral.sdk._unasync`` turns one name into the other)."""

from __future__ import annotations

import asyncio
from typing import IO


def sync_write(out: IO[bytes], chunk: bytes) -> None:
    """Write ``chunk`` to ``out``."""
    out.write(chunk)


async def async_write(out: IO[bytes], chunk: bytes) -> None:
    """Write ``chunk`` to ``out`` from a worker thread (a slow disk never blocks the loop)."""
    await asyncio.to_thread(out.write, chunk)
