"""The agent's local copy of every VM spec: one JSON file per VM, written atomically.

Layout: ``<data>/vms/<vm_id>.json`` holds a ``StoredSpec`` (the ``VmSpec`` and the disk path the VM
was defined with). Files are mode 0600 (the spec holds the VNC password and, in its data disks,
the credentials of their pools).

Invariant kept by the task executor: a spec file exists only for a definition the hypervisor has
accepted, so "spec without a VM" at start-up means the definition was lost and may be redefined.
Undefine first renames the file to ``<vm_id>.json.deleting`` (``begin_delete``); a leftover
``.deleting`` file means an undefine was interrupted and must be finished, never undone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path

from pydantic import ValidationError

from corral.agent.files import write_private
from corral.api.agent import VmSpec
from corral.api.common import Model
from corral.api.errors import InvalidInput, StorageError

_VM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SUFFIX = ".json"
_DELETING = ".json.deleting"


def check_vm_id(vm_id: str) -> str:
    """Return ``vm_id`` if it is safe as a file name, else raise ``InvalidInput``."""
    if not _VM_ID.match(vm_id) or ".." in vm_id:
        raise InvalidInput("invalid vm id", vm_id=vm_id)
    return vm_id


class StoredSpec(Model):
    """What the agent remembers about a VM it defined."""

    spec: VmSpec
    disk_path: str | None
    """The host-local root disk; None: the root is a volume (the data disk ``vda``)."""
    cdrom_path: str | None = None
    """The cached ISO file in the CD-ROM drive (``spec.cdrom``), None when empty."""


class SpecStore:
    """The spec files of one host, with an in-memory cache (the files are the truth at start-up).

    Used from the event loop, except ``put`` run by ``put_async`` in a worker thread (file I/O,
    then one atomic dict store in the cache).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, StoredSpec] = {}
        self.corrupt: list[str] = []

    def open(self) -> None:
        """Create the directory if needed and load every spec file (unreadable files are skipped
        and reported by ``corrupt``)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cache.clear()
        self.corrupt = []
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            vm_id = path.name.removesuffix(_SUFFIX)
            try:
                self._cache[vm_id] = StoredSpec.model_validate_json(path.read_bytes())
            except (OSError, ValidationError):
                self.corrupt.append(vm_id)

    def get(self, vm_id: str) -> StoredSpec | None:
        return self._cache.get(vm_id)

    def all(self) -> dict[str, StoredSpec]:
        """A copy of every stored spec by vm id."""
        return dict(self._cache)

    def users_of(self, volume_id: str) -> list[str]:
        """The VMs (sorted ids) whose stored spec lists data volume ``volume_id``."""
        return sorted(
            vm_id
            for vm_id, stored in self._cache.items()
            if any(d.volume.volume_id == volume_id for d in stored.spec.disks)
        )

    def put(self, stored: StoredSpec) -> None:
        """Write (or replace) the spec file of ``stored.spec.vm_id`` atomically."""
        vm_id = check_vm_id(stored.spec.vm_id)
        write_private(self._path(vm_id), stored.model_dump_json(indent=2).encode())
        self._cache[vm_id] = stored

    async def put_async(self, stored: StoredSpec) -> None:
        """``put`` in a worker thread, so the event loop does not stall on the fsyncs; returns once
        the file is durable. The caller must not write the same VM's spec concurrently (the agent
        runs the tasks of one VM one after the other)."""
        await asyncio.to_thread(self.put, stored)

    def delete(self, vm_id: str) -> None:
        """Remove the spec file. Absent is success."""
        check_vm_id(vm_id)
        self._unlink(self._path(vm_id))
        self._unlink(self._deleting(vm_id))
        self._cache.pop(vm_id, None)

    def begin_delete(self, vm_id: str) -> StoredSpec | None:
        """Mark the VM as being undefined (rename its file to ``.deleting``); returns the spec."""
        check_vm_id(vm_id)
        stored = self._cache.pop(vm_id, None)
        path = self._path(vm_id)
        if path.exists():
            try:
                os.replace(path, self._deleting(vm_id))
            except OSError as exc:
                if stored is not None:
                    self._cache[vm_id] = stored
                raise StorageError("cannot mark spec deleted", vm_id=vm_id) from exc
        return stored

    def abort_delete(self, vm_id: str, stored: StoredSpec | None) -> None:
        """Undo ``begin_delete`` after the undefine failed: the spec is back in place."""
        deleting = self._deleting(vm_id)
        if deleting.exists():
            with contextlib.suppress(OSError):
                os.replace(deleting, self._path(vm_id))
        if stored is not None:
            self._cache[vm_id] = stored

    def pending_deletes(self) -> list[str]:
        """VM ids whose undefine was interrupted (a ``.deleting`` file is left)."""
        return sorted(p.name.removesuffix(_DELETING) for p in self.directory.glob(f"*{_DELETING}"))

    def _path(self, vm_id: str) -> Path:
        return self.directory / f"{vm_id}{_SUFFIX}"

    def _deleting(self, vm_id: str) -> Path:
        return self.directory / f"{vm_id}{_DELETING}"

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError("cannot delete spec file", path=str(path)) from exc
