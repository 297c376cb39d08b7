"""Helpers shared by the data-volume backends: pool settings, volume names, errors, locks."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import CorralError, InvalidInput, StorageError

GIB = 1 << 30
MIB = 1 << 20
PART_SUFFIX = ".part"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")

S = TypeVar("S", bound=BaseModel)


def pool_settings(pool: PoolRef, model: type[S]) -> S:
    """``pool.settings`` validated as ``model``; ``InvalidInput`` (context ``pool_id``,
    ``problems``) when they do not fit."""
    try:
        return model.model_validate(pool.settings)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        ]
        raise InvalidInput(
            f"settings of {pool.type} pool {pool.id} are not usable: {'; '.join(problems)}",
            pool_id=pool.id,
            type=pool.type,
            problems=problems,
        ) from None


def safe_name(volume: VolumeRef) -> str:
    """``volume.name`` if it is a plain name (letters, digits, ``_.-``; no ``/``, no ``..``,
    not starting with a dot), else ``InvalidInput``."""
    name = volume.name
    if not _NAME.match(name) or ".." in name or name.endswith(PART_SUFFIX):
        raise InvalidInput(
            f"invalid volume name {name!r} on pool {volume.pool.id}",
            pool_id=volume.pool.id,
            volume_id=volume.volume_id,
            name=name,
        )
    return name


def safe_image_id(image_id: str) -> str:
    """``image_id`` if it can name a file or an RBD image (as ``safe_name``), else
    ``InvalidInput``."""
    if not _NAME.match(image_id) or ".." in image_id or image_id.endswith(PART_SUFFIX):
        raise InvalidInput(f"invalid image id {image_id!r}", image_id=image_id)
    return image_id


def volume_error(action: str, volume: VolumeRef, exc: BaseException) -> CorralError:
    """``exc`` as the error a backend raises for ``action`` on ``volume``: Corral errors other
    than ``StorageError`` pass unchanged; ``StorageError`` and ``OSError`` become a
    ``StorageError`` naming the volume (context ``pool_id``, ``volume_id`` plus the original
    context)."""
    if isinstance(exc, CorralError) and not isinstance(exc, StorageError):
        return exc
    detail = exc.message if isinstance(exc, CorralError) else str(exc)
    context = dict(exc.context) if isinstance(exc, CorralError) else {}
    context.update(pool_id=volume.pool.id, volume_id=volume.volume_id)
    return StorageError(f"cannot {action} volume {volume.volume_id}: {detail}", **context)


class KeyedLocks:
    """One ``asyncio.Lock`` per key, dropped when nobody holds or waits for it (so hundreds of
    thousands of volumes over an agent's life leave no trace)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


SNAPSHOTS_UNSUPPORTED = (
    "rbd volumes have Ceph snapshots (rbd.snapshot tasks), not external qcow2 snapshot files"
)


def file_ref(volume: VolumeRef, name: str) -> VolumeRef:
    """The volume's file ``name`` (a snapshot or overlay of it) as a ``VolumeRef`` of its own,
    for the backends' path and URL helpers. Snapshot files are qcow2: ``InvalidInput`` for a
    raw volume."""
    if volume.format != "qcow2":
        raise InvalidInput(
            f"volume {volume.volume_id} is {volume.format}: snapshots need qcow2 volumes",
            pool_id=volume.pool.id,
            volume_id=volume.volume_id,
            format=volume.format,
        )
    return volume.model_copy(update={"name": name})


def name_in_dir(backing: str | None, directory: str) -> str | None:
    """The backing file named in an image header as a name in ``directory`` (the image's
    own): a relative name without ``/`` as it is, ``<directory>/<name>`` as ``<name>``; any
    other string unchanged. None stays None."""
    if backing is None or "/" not in backing:
        return backing
    head, _, tail = backing.rpartition("/")
    return tail if head == directory.rstrip("/") and tail else backing
