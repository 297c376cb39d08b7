"""Async wrappers around the ``qemu-img`` command: image inspection and overlay creation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.api.errors import InvalidInput, StorageError

QEMU_IMG = "qemu-img"


_DIRECT: dict[Path, bool] = {}


def direct_io(directory: Path) -> bool:
    """Whether files in ``directory`` can be opened with ``O_DIRECT`` (not on tmpfs, for one);
    probed once per directory with a scratch file."""
    known = _DIRECT.get(directory)
    if known is not None:
        return known
    probe = directory / f".corral-direct-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError:
        ok = False
    else:
        os.close(fd)
        ok = True
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    _DIRECT[directory] = ok
    return ok


def copy_flags(dest: Path) -> tuple[str, ...]:
    """``qemu-img convert`` options for a full copy into ``dest`` that must be durable: direct
    I/O (the data is on disk when the copy ends, so the caller's fsync is nearly free) with
    out-of-order writes from 16 coroutines — on this kind of disk faster than a cached copy
    plus its fsync — where the file system takes ``O_DIRECT``; none elsewhere (a cached copy,
    which the caller fsyncs). Blocking (a probe): call from a worker thread or once per
    directory."""
    return ("-t", "none", "-W", "-m", "16") if direct_io(dest.parent) else ()


async def run_qemu_img(*args: str, qemu_img: str = QEMU_IMG) -> str:
    """Run ``qemu-img ARGS`` and return its stdout.

    Raises ``StorageError`` (context: ``cmd``, ``returncode``, ``stderr``) when it cannot be
    started or exits non-zero. Cancelling the caller kills the process.
    """
    cmd = [qemu_img, *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise StorageError(f"cannot run {qemu_img}: {exc.strerror}", cmd=cmd) from exc
    try:
        out, err = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        stderr = err.decode(errors="replace").strip()
        raise StorageError(
            f"{qemu_img} {args[0] if args else ''} failed: {stderr or 'no error output'}",
            cmd=cmd,
            returncode=proc.returncode,
            stderr=stderr,
        )
    return out.decode(errors="replace")


@dataclass(frozen=True)
class ImageInfo:
    """What ``qemu-img info`` says about a file read as a given format."""

    format: str
    virtual_size: int
    backing_file: str | None
    data_file: str | None


async def image_info(path: Path, fmt: str, *, qemu_img: str = QEMU_IMG) -> ImageInfo:
    """Inspect ``path`` read as ``fmt`` (never probed: a raw image cannot pose as qcow2).

    Raises ``InvalidInput`` if the file is not a valid ``fmt`` image, ``StorageError`` if it
    cannot be read.
    """
    try:
        out = await run_qemu_img(
            "info", "--output=json", "-U", "-f", fmt, str(path), qemu_img=qemu_img
        )
    except StorageError as exc:
        if "returncode" not in exc.context or not await asyncio.to_thread(path.is_file):
            raise  # qemu-img did not run, or the file is missing: not the image's fault
        raise InvalidInput(
            f"{path.name} is not a valid {fmt} image: {exc.context.get('stderr', exc.message)}",
            path=str(path),
            format=fmt,
            stderr=exc.context.get("stderr"),
        ) from exc
    try:
        data: dict[str, Any] = json.loads(out)
        specific = data.get("format-specific", {}).get("data", {})
        return ImageInfo(
            format=str(data["format"]),
            virtual_size=int(data["virtual-size"]),
            backing_file=data.get("backing-filename"),
            data_file=specific.get("data-file"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError(
            f"unexpected output of qemu-img info for {path}", path=str(path), output=out[:2000]
        ) from exc


async def create_overlay(
    path: Path, *, base: Path, base_format: str, size_bytes: int, qemu_img: str = QEMU_IMG
) -> None:
    """Create a qcow2 file at ``path`` backed by ``base`` (absolute path) of ``size_bytes``.

    Raises ``StorageError`` with qemu-img's stderr on failure (a file may be left at ``path``:
    the caller creates it under a temporary name).
    """
    await run_qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        base_format,
        "-b",
        str(base),
        str(path),
        str(size_bytes),
        qemu_img=qemu_img,
    )
