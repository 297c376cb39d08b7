"""Whole-VM snapshots on libvirt: guest file system freeze/thaw, one external snapshot of several
data disks (with the memory state or disk-only), and a restore from a memory state file.

What libvirt 9.0 / QEMU 7.2 do here (verified on the testbed, TCG guest):
- ``snapshotCreateXML`` with ``<memory snapshot='external' file=…/>`` and external disks, flags
  ``NO_METADATA | REUSE_EXT | ATOMIC`` (no ``DISK_ONLY``), on a paused domain: libvirt saves
  the memory (a save image, as ``virDomainSave`` writes it: 0600, ~100 MB for a 256 MiB TCG
  guest), then switches the disks in one transaction, and leaves the domain paused (it resumes
  only a domain it paused itself; a running one it pauses and resumes). A failure after the
  memory was saved (an overlay QEMU cannot open) leaves the disks and the guest as they were
  and no memory file (libvirt removes it; the agent too). The persistent
  definition follows the disks (with explicit ``<backingStore>``: rewritten by ``persist_file``
  as for single-disk snapshots). Disks marked ``snapshot='no'`` (root disk, rbd, CD-ROM, empty
  or not) are left alone; all of them may be (the memory alone).
- ``restoreFlags(file, dxml, SAVE_RUNNING)`` restores a persistent, stopped domain on other disk
  files than the ones it was saved with; the header of a memory saved while paused says
  "paused": ``SAVE_RUNNING`` overrides it. ``dxml`` must have the saved definition's ABI, which
  the persistent definition does not keep: Corral's redefinitions (``define``, e.g. by a
  snapshot revert) let libvirt assign PCI addresses anew ("Target device PCI address
  0000:00:05.0 does not match source 0000:00:07.0"). So ``dxml`` is the definition saved in the
  file (``saveImageGetXMLDesc``, secrets included) with the disks' sources taken from the
  persistent definition, by target: the guest's devices as they were, its disks' files as
  they are now. The persistent definition is left as it is (the next cold boot uses it).
- ``fsFreeze`` waits for the guest agent as long as the domain's agent response timeout says
  (``agentSetResponseTimeout``, seconds; default: block): it is set around the call and put
  back to libvirt's default afterwards. A hung agent (SIGSTOP in the guest) makes ``fsFreeze``
  and ``fsThaw`` fail after ~5 s each ("Guest agent is not responding").
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from corral.agent.compute.libvirt import disks as data_disks
from corral.agent.compute.libvirt import domains
from corral.agent.compute.libvirt.connection import Connection
from corral.agent.compute.libvirt.errors import is_no_domain, libvirt_errors, translate
from corral.agent.compute.libvirt.xml.parse import CONFIG_DRIVE_ALIAS, disk_targets
from corral.agent.compute.libvirt.xml.util import sub
from corral.agent.storage.backend import DiskSource
from corral.api.errors import InvalidInput, InvalidState
from corral.api.vms import PowerState

T = TypeVar("T")
log = logging.getLogger(__name__)

VM_SNAPSHOT_FLAGS = (
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
)
"""An external snapshot libvirt keeps no record of, into overlays made beforehand (plus
``DISK_ONLY`` when no memory is saved)."""
_DEFAULT_AGENT_TIMEOUT = libvirt.VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT


def snapshot_xml(targets: list[str], files: Mapping[str, str], memory: str | None) -> str:
    """The ``<domainsnapshot>`` switching each target of ``files`` to its existing qcow2 file,
    saving the memory to ``memory`` (None: none) and leaving every other disk of ``targets``
    alone (``snapshot='no'``)."""
    root = ET.Element("domainsnapshot")
    if memory is not None:
        sub(root, "memory", snapshot="external", file=memory)
    disks = sub(root, "disks")
    for dev in targets:
        path = files.get(dev)
        if path is None:
            sub(disks, "disk", name=dev, snapshot="no")
            continue
        disk = sub(disks, "disk", name=dev, snapshot="external", type="file")
        sub(disk, "driver", type="qcow2")
        sub(disk, "source", file=path)
    return ET.tostring(root, encoding="unicode")


def take(dom: Any, *, vm_id: str, files: Mapping[str, str], memory: str | None) -> None:
    """Switch the live disks of ``files`` (volume id → overlay path) and save the memory in
    one snapshot, unless every disk is on its overlay already; then ``persist_file`` each.
    ``InvalidState`` unless QEMU runs or when only some disks are switched."""
    if not data_disks.is_active(dom):
        raise InvalidState(f"VM {vm_id} is not running", vm_id=vm_id)
    by_target: dict[str, str] = {}
    switched: list[str] = []
    for volume_id, path in files.items():
        target, active, _ = data_disks.live_chain(dom, vm_id=vm_id, volume_id=volume_id)
        by_target[target] = path
        if active is not None and os.path.normpath(active) == os.path.normpath(path):
            switched.append(volume_id)
    if switched and len(switched) != len(files):
        raise InvalidState(
            f"only some disks of VM {vm_id} are on their new files",
            vm_id=vm_id,
            switched=sorted(switched),
            volumes=sorted(files),
        )
    if not files or not switched:
        with libvirt_errors(vm_id=vm_id):
            live = dom.XMLDesc(0)
        xml = snapshot_xml(list(disk_targets(live)), by_target, memory)
        flags = VM_SNAPSHOT_FLAGS
        if memory is None:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        with libvirt_errors(vm_id=vm_id):
            dom.snapshotCreateXML(xml, flags)
    for volume_id, path in files.items():
        data_disks.persist_file(dom, vm_id=vm_id, volume_id=volume_id, path=path)


def with_current_disks(saved: str, current: str, *, vm_id: str) -> str:
    """The domain XML ``saved`` (the memory state's) with each disk's ``type``, ``<source>`` and
    ``<auth>`` from the disk of the same target in ``current`` (none: an empty drive) and no
    ``<backingStore>`` (libvirt reads the chains from the images). ``InvalidState`` if
    ``current`` lacks one of the saved disks or has a data volume the saved state has not.
    The config drive is the exception both ways (the guest read it when it booted): one saved
    but gone now stays, empty; one added since is left out until the next cold boot."""
    root = ET.fromstring(saved)
    now = {
        target.get("dev", ""): disk
        for disk in ET.fromstring(current).iterfind("devices/disk")
        if (target := disk.find("target")) is not None
    }
    for disk in root.iterfind("devices/disk"):
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        new = now.pop(dev, None)
        if new is None and _alias(disk) == CONFIG_DRIVE_ALIAS:
            for child in list(disk):
                if child.tag in ("source", "backingStore"):
                    disk.remove(child)
            continue
        if new is None:
            raise InvalidState(
                f"VM {vm_id} no longer has the disk {dev} its memory state was saved with",
                vm_id=vm_id,
                device=dev,
            )
        for child in list(disk):
            if child.tag in ("source", "auth", "backingStore"):
                disk.remove(child)
        for child in new:
            if child.tag in ("source", "auth"):
                disk.insert(0, child)
        disk.set("type", new.get("type", "file"))
    added = sorted(
        dev for dev, disk in now.items() if _alias(disk) not in (None, CONFIG_DRIVE_ALIAS)
    )
    if added:
        raise InvalidState(
            f"VM {vm_id} has disks its memory state was saved without ({', '.join(added)}):"
            " detach them first",
            vm_id=vm_id,
            devices=added,
        )
    return ET.tostring(root, encoding="unicode")


def _alias(disk: ET.Element) -> str | None:
    alias = disk.find("alias")
    return alias.get("name") if alias is not None else None


def restore(conn: Any, *, vm_id: str, memory: str) -> None:
    """Start the stopped domain from the save image ``memory`` on the disk files of its
    persistent definition (see ``with_current_disks``), running. Running is success, paused
    ``InvalidState``."""
    dom = domains.require(conn, vm_id)
    state = domains.state_of(dom)
    if state == PowerState.running:
        return
    if state == PowerState.paused:
        raise InvalidState(
            f"VM {vm_id} is paused: it cannot be restored from a memory state",
            vm_id=vm_id,
            power_state=state.value,
        )
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    with libvirt_errors(vm_id=vm_id, memory=memory):
        saved = conn.saveImageGetXMLDesc(memory, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
        current = dom.XMLDesc(flags)
    xml = with_current_disks(saved, current, vm_id=vm_id)
    with libvirt_errors(vm_id=vm_id, memory=memory):
        conn.restoreFlags(memory, xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)


def _agent_call(dom: Any, timeout: float, call: Callable[[], T]) -> T:
    """``call`` with the domain's guest agent response timeout set to ``timeout`` (whole
    seconds, at least 1), put back to libvirt's default afterwards."""
    dom.agentSetResponseTimeout(max(1, math.ceil(timeout)), 0)
    try:
        return call()
    finally:
        try:
            dom.agentSetResponseTimeout(_DEFAULT_AGENT_TIMEOUT, 0)
        except libvirt.libvirtError:  # the domain stopped meanwhile: nothing to put back
            pass


def freeze(dom: Any, *, vm_id: str, timeout: float) -> bool:
    """Whether ``fsFreeze`` froze the guest's file systems within ``timeout``; a refusal (no
    agent, no answer in time, an error of the agent) is logged and False. ``NotFound`` if the
    domain vanished."""
    try:
        count = _agent_call(dom, timeout, lambda: dom.fsFreeze(None, 0))
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            raise translate(exc, vm_id=vm_id) from exc
        log.warning(
            "vm %s: guest file systems not frozen, going on unquiesced: %s",
            vm_id,
            exc.get_error_message() or exc,
        )
        return False
    log.info("vm %s: %s guest file system(s) frozen", vm_id, count)
    return True


def thaw(dom: Any, *, vm_id: str, timeout: float) -> None:
    """``fsThaw`` within ``timeout``; ``DriverError`` (or ``NotFound``) if it fails."""
    with libvirt_errors(vm_id=vm_id):
        _agent_call(dom, timeout, lambda: dom.fsThaw(None, 0))


def _file_paths(vm_id: str, disks: Mapping[str, DiskSource]) -> dict[str, str]:
    paths: dict[str, str] = {}
    for volume_id, source in disks.items():
        if source.kind != "file" or not source.path:
            raise InvalidInput(
                "external snapshots are only supported on file volumes here",
                vm_id=vm_id,
                volume_id=volume_id,
                kind=source.kind,
                protocol=source.protocol,
            )
        paths[volume_id] = source.path
    return paths


class LibvirtVmSnapshots:
    """The whole-VM snapshot half of ``LibvirtDriver`` (see the module docstring); every call
    runs in a worker thread through the driver's ``_run``."""

    _conn: Connection

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _dom(self, vm_id: str) -> Any:
        raise NotImplementedError

    def _prepare_console_dir(self) -> None:
        raise NotImplementedError

    async def fs_freeze(self, vm_id: str, timeout: float) -> bool:
        """``fsFreeze`` through the guest agent, bounded by ``timeout`` (see ``freeze``)."""
        return await self._run(lambda: freeze(self._dom(vm_id), vm_id=vm_id, timeout=timeout))

    async def fs_thaw(self, vm_id: str, timeout: float) -> None:
        await self._run(lambda: thaw(self._dom(vm_id), vm_id=vm_id, timeout=timeout))

    async def snapshot_vm(
        self, vm_id: str, disks: Mapping[str, DiskSource], memory: Path | None
    ) -> None:
        """One ``snapshotCreateXML`` for every disk and the memory (see ``take``)."""
        files = _file_paths(vm_id, disks)
        where = str(memory) if memory is not None else None
        await self._run(lambda: take(self._dom(vm_id), vm_id=vm_id, files=files, memory=where))

    async def restore_vm(self, vm_id: str, memory: Path) -> None:
        """``restoreFlags`` with the saved devices and the persistent definition's disk files
        (see ``restore``); the console directory is prepared first, as for a start."""

        def run() -> None:
            self._prepare_console_dir()
            restore(self._conn.get(), vm_id=vm_id, memory=str(memory))

        await self._run(run)
