"""Root-disk layers of a ``DirPool``: linked clones share a frozen layer of their source's disk.

``freeze``: the stopped VM's ``root.qcow2`` (an overlay on its base) is renamed into the image
cache as ``images/<layer_id>.qcow2`` (read-only from then on, 0644) and a new empty overlay on it
becomes the VM's ``root.qcow2``: a rename and a qcow2 header, whatever the disk's size. Linked
clones' disks are overlays on the same layer (``create_vm_disk`` finds it in the cache).
``thaw`` undoes a freeze nobody else uses yet. ``flatten`` makes a stopped VM's disk standalone
(``qemu-img rebase -b ''``: safe mode, the data of the whole chain copied in).

A crash between the two halves of ``freeze`` leaves the layer without the VM's overlay: calling
``freeze`` again finishes it (idempotent), ``thaw`` moves the layer back.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from corral.agent.storage.qemu_img import create_overlay, image_info, run_qemu_img
from corral.api.agent import ImageRef
from corral.api.errors import InvalidState, NotFound, StorageError

if TYPE_CHECKING:
    from corral.agent.storage.dirpool import DirPool

_PART = ".part"


async def freeze(pool: DirPool, vm_id: str, layer: ImageRef) -> str:
    """See the module docstring; returns the layer's path. ``NotFound`` without a disk,
    ``InvalidState`` if the layer exists but the disk is not on it, ``StorageError``."""
    disk = Path(pool.disk_path(vm_id))
    dest = pool.image_path(layer)
    async with pool.vm_lock(vm_id):
        try:
            if await asyncio.to_thread(dest.is_file):
                if await asyncio.to_thread(disk.is_file):
                    await _check_on(pool, disk, dest, vm_id)
                    return str(dest)
                await _overlay(pool, disk, dest)  # a crash came between rename and overlay
                return str(dest)
            if not await asyncio.to_thread(disk.is_file):
                raise NotFound(f"VM {vm_id} has no disk on this host", vm_id=vm_id)
            await asyncio.to_thread(_move, disk, dest, 0o644)
            try:
                await _overlay(pool, disk, dest)
            except BaseException:
                await asyncio.to_thread(_move, dest, disk, 0o600)
                raise
        except OSError as exc:
            raise StorageError(
                f"cannot freeze the disk of VM {vm_id}: {exc}", vm_id=vm_id, layer=str(dest)
            ) from exc
    return str(dest)


async def thaw(pool: DirPool, vm_id: str, layer: ImageRef) -> None:
    """Drop the VM's overlay on ``layer`` and make the layer its disk again. No layer:
    nothing to do. ``InvalidState`` if the VM's disk is on something else."""
    disk = Path(pool.disk_path(vm_id))
    dest = pool.image_path(layer)
    async with pool.vm_lock(vm_id):
        try:
            if not await asyncio.to_thread(dest.is_file):
                return
            if await asyncio.to_thread(disk.is_file):
                await _check_on(pool, disk, dest, vm_id)
                await asyncio.to_thread(disk.unlink)
            await asyncio.to_thread(_move, dest, disk, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot thaw the disk of VM {vm_id}: {exc}", vm_id=vm_id, layer=str(dest)
            ) from exc


async def flatten(pool: DirPool, vm_id: str) -> None:
    """Make the stopped VM's disk standalone (``qemu-img rebase -b ''``, safe mode).
    ``NotFound`` without a disk; standalone already: nothing to do."""
    disk = Path(pool.disk_path(vm_id))
    async with pool.vm_lock(vm_id):
        if not await asyncio.to_thread(disk.is_file):
            raise NotFound(f"VM {vm_id} has no disk on this host", vm_id=vm_id)
        info = await image_info(disk, "qcow2", qemu_img=pool.qemu_img)
        if info.backing_file is None:
            return
        await run_qemu_img(
            "rebase", "-q", "-f", "qcow2", "-b", "", str(disk), qemu_img=pool.qemu_img
        )


async def _check_on(pool: DirPool, disk: Path, layer: Path, vm_id: str) -> None:
    info = await image_info(disk, "qcow2", qemu_img=pool.qemu_img)
    if info.backing_file is None or not _same(info.backing_file, layer):
        raise InvalidState(
            f"the disk of VM {vm_id} is not an overlay on layer {layer.name}",
            vm_id=vm_id,
            backing=info.backing_file,
        )


async def _overlay(pool: DirPool, disk: Path, layer: Path) -> None:
    """A new empty ``disk`` on ``layer`` (its virtual size), written under ``.part``."""
    info = await image_info(layer, "qcow2", qemu_img=pool.qemu_img)
    part = disk.with_name(disk.name + _PART)
    try:
        await create_overlay(
            part,
            base=layer,
            base_format="qcow2",
            size_bytes=info.virtual_size,
            qemu_img=pool.qemu_img,
        )
        await asyncio.to_thread(_move, part, disk, 0o600)
    except BaseException:
        part.unlink(missing_ok=True)  # inline: survives cancellation
        raise


def _move(src: Path, dest: Path, mode: int) -> None:
    src.chmod(mode)
    os.replace(src, dest)


def _same(a: str, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
