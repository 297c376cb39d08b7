"""Small file helpers for the agent's data directory: atomic private writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from corral.api.errors import StorageError


def write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (mode 0600): temp file, fsync, rename, fsync dir.

    On failure the old file (if any) is untouched and no temp file is left; raises ``StorageError``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError("cannot write file", path=str(path), reason=exc.strerror) from exc


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
