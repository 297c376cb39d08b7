"""NoCloud config drives: the ISO 9660 image cloud-init (NoCloud datasource) configures a guest
from, built with pycdlib (pure Python).

Layout, as ``cloud-localds`` / ``genisoimage -volid cidata -joliet -rock`` make it: volume label
``cidata``; in the root directory ``meta-data``, ``user-data`` and, when given,
``network-config``, with these names in Rock Ridge (what Linux mounts show) and Joliet (what
Windows shows), level-1 8.3 names (``META_DAT.;1``) underneath. ``user-data`` is always written,
empty when the drive has none: cloud-init requires both ``user-data`` and ``meta-data`` and
ignores a ``cidata`` volume without them ("not a valid seed"), network configuration included.

pycdlib stamps every date with the current time, so two builds of one input differ in their
dates. Instead the image carries a digest of its input (files and layout version) in the primary
volume descriptor's application identifier: ``stage_iso`` builds nothing when the file at the
path already holds the same input, so an unchanged drive is left as it is (same bytes, same
inode: libvirt's ownership of it and a running QEMU's view stay as they are).

Files are 0600 (user-data may hold secrets); QEMU (libvirt-qemu) gets them as it gets the root
disks: libvirt hands a domain's disk files to that user when it starts the domain (its dynamic
ownership), so their directory only has to be traversable (``prepare_dir``: 0711).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from corral.agent.files import fsync_dir
from corral.api.agent import ConfigDrive
from corral.api.errors import InvalidInput, StorageError

VOLUME_LABEL = "cidata"
"""The volume identifier cloud-init's NoCloud datasource looks for."""
LAYOUT = "corral-configdrive-1"
"""Part of every digest: a change of the image's layout makes every drive rebuilt once."""
_DIGEST_PREFIX = "CORRAL-"
_DIGEST_CHARS = 48
"""Hex digits of the digest kept: the identifier holds 64 characters in the Joliet volume
descriptor (UTF-16), prefix included."""
_ISO_NAMES = {
    "meta-data": "/META_DAT.;1",
    "network-config": "/NETWORK_.;1",
    "user-data": "/USER_DAT.;1",
}
_MODE = 0o600


def drive_files(drive: ConfigDrive) -> dict[str, bytes]:
    """The files of the drive by name (UTF-8), sorted: ``meta-data``, ``network-config`` (only
    when given) and ``user-data`` (empty when not given)."""
    files = {"meta-data": drive.meta_data, "user-data": drive.user_data or ""}
    if drive.network_config is not None:
        files["network-config"] = drive.network_config
    return {name: files[name].encode() for name in sorted(files)}


def drive_digest(drive: ConfigDrive) -> str:
    """SHA-256 of the layout version and the drive's files, its first 192 bits in lower-case hex:
    equal for equal drives."""
    h = hashlib.sha256(LAYOUT.encode() + b"\0")
    for name, data in drive_files(drive).items():
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:_DIGEST_CHARS]


def iso_path(directory: Path, vm_id: str) -> Path:
    """Where the config drive of ``vm_id`` lives: ``<directory>/<vm_id>.iso``. ``InvalidInput``
    for an id that is not a plain file name."""
    if not vm_id or vm_id.startswith(".") or Path(vm_id).name != vm_id:
        raise InvalidInput("invalid vm id for a config drive", vm_id=vm_id)
    return directory / f"{vm_id}.iso"


def prepare_dir(directory: Path) -> None:
    """Create ``directory`` (0711: QEMU traverses it, nobody lists it) if it is missing.
    ``StorageError`` on failure."""
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o711)
    except OSError as exc:
        raise StorageError(
            "cannot create the config drive directory", path=str(directory), reason=exc.strerror
        ) from exc


def _write(drive: ConfigDrive, out: BinaryIO) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        vol_ident=VOLUME_LABEL,
        app_ident_str=_DIGEST_PREFIX + drive_digest(drive).upper(),
        joliet=3,
        rock_ridge="1.09",
    )
    for name, data in drive_files(drive).items():
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            _ISO_NAMES[name],
            rr_name=name,
            joliet_path=f"/{name}",
            file_mode=0o100444,
        )
    iso.write_fp(out)
    iso.close()


def iso_digest(path: Path) -> str | None:
    """The input digest (see ``drive_digest``) of the config drive at ``path``;
    None if there is no such file or it is not one of ours."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (OSError, PyCdlibException):
        return None
    try:
        raw: bytes = iso.pvd.application_identifier.text
    finally:
        iso.close()
    text = raw.decode("ascii", errors="replace").rstrip()
    return text[len(_DIGEST_PREFIX) :].lower() if text.startswith(_DIGEST_PREFIX) else None


def stage_iso(drive: ConfigDrive, path: Path) -> Path | None:
    """Build the image of ``drive`` into a new hidden file next to ``path`` (fsynced, 0600) and
    return it, for ``commit_iso`` (or to be removed); None if ``path`` already holds it. Its
    directory must exist. ``StorageError`` on failure (no file is left)."""
    if iso_digest(path) == drive_digest(drive):
        return None
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(fd, "wb") as out:
            _write(drive, out)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(_MODE)
    except (OSError, PyCdlibException) as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise StorageError(
            "cannot build the config drive", path=str(path), reason=str(exc)
        ) from exc
    return tmp


def commit_iso(staged: Path, path: Path) -> None:
    """Rename the ``stage_iso`` file to ``path`` (atomic: readers see the old or the new drive).
    ``StorageError`` on failure (the staged file is removed)."""
    try:
        os.replace(staged, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise StorageError(
            "cannot install the config drive", path=str(path), reason=exc.strerror
        ) from exc


def build_iso(drive: ConfigDrive, path: Path) -> None:
    """Make ``path`` the config drive of ``drive`` atomically (temp file, fsync, rename); a file
    already holding that input is left as it is. ``StorageError`` on failure (the old file, if
    any, is then untouched)."""
    staged = stage_iso(drive, path)
    if staged is not None:
        commit_iso(staged, path)


def remove_iso(path: Path) -> None:
    """Delete the config drive at ``path``; absent is success. ``StorageError`` on failure."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(
            "cannot delete the config drive", path=str(path), reason=exc.strerror
        ) from exc
