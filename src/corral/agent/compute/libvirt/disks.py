"""Blocking operations on the data-volume disks of a domain, run by the driver in worker threads.

A data volume's disk is found by its alias ``ua-vol-<volume_id>``, in the persistent definition
(``config``) and, while QEMU runs (running or paused), in the live one. Each function looks at
both and only changes what is missing or still there, so every step can be repeated.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt

from corral.agent.compute.libvirt.domains import state_of
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.xml.compose import disk_alias
from corral.agent.compute.libvirt.xml.disk import IoTune
from corral.agent.compute.libvirt.xml.parse import disk_targets, parse_domain
from corral.agent.compute.libvirt.xml.util import sub
from corral.api.errors import DriverError, InvalidInput, InvalidState, NotFound
from corral.api.vms import PowerState

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
SNAPSHOT_FLAGS = (
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
)
"""A disk-only external snapshot libvirt keeps no record of, all disks or none, into overlay
files that exist already (made by the pool backend with a relative backing name: libvirt would
write an absolute one)."""
_ACTIVE = (PowerState.running, PowerState.paused)


def is_active(dom: Any) -> bool:
    """Whether QEMU runs the domain (running or paused): live changes are possible."""
    return state_of(dom) in _ACTIVE


def _xml(dom: Any, *, live: bool, vm_id: str) -> str:
    with libvirt_errors(vm_id=vm_id):
        return str(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))


def _missing(dom: Any, *, live: bool, vm_id: str, volume_id: str, device: str) -> bool:
    """Whether the volume's disk is absent from the live or persistent definition;
    ``InvalidState`` if another disk holds ``device`` there."""
    targets = disk_targets(_xml(dom, live=live, vm_id=vm_id))
    if volume_id in targets.values():
        return False
    if device in targets:
        raise InvalidState(
            f"device {device} of VM {vm_id} is used by another disk",
            vm_id=vm_id,
            volume_id=volume_id,
            device=device,
            used_by=targets[device],
        )
    return True


def attach(dom: Any, *, vm_id: str, volume_id: str, device: str, xml: str) -> None:
    """Add the disk ``xml`` to the persistent definition and, if QEMU runs, hot-plug it.
    Already there (same alias) is success."""
    flags = 0
    if _missing(dom, live=False, vm_id=vm_id, volume_id=volume_id, device=device):
        flags |= CONFIG
    if is_active(dom) and _missing(dom, live=True, vm_id=vm_id, volume_id=volume_id, device=device):
        flags |= LIVE
    if flags:
        with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
            dom.attachDeviceFlags(xml, flags)


def request_unplug(dom: Any, *, vm_id: str, volume_id: str) -> bool:
    """Ask the guest to release the disk if QEMU still has it; True if it does (the caller then
    waits for ``plugged`` to turn False). Repeating the request while one is pending is fine."""
    if not plugged(dom, vm_id=vm_id, volume_id=volume_id):
        return False
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        dom.detachDeviceAlias(disk_alias(volume_id), LIVE)
    return True


def plugged(dom: Any, *, vm_id: str, volume_id: str) -> bool:
    """Whether the running QEMU still has the disk (False when the domain is not active)."""
    if not is_active(dom):
        return False
    return parse_domain(_xml(dom, live=True, vm_id=vm_id)).data_disk(volume_id) is not None


def remove_config(dom: Any, *, vm_id: str, volume_id: str) -> None:
    """Remove the disk from the persistent definition; absent is success."""
    if parse_domain(_xml(dom, live=False, vm_id=vm_id)).data_disk(volume_id) is None:
        return
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        dom.detachDeviceAlias(disk_alias(volume_id), CONFIG)


def live_target(dom: Any, *, vm_id: str, volume_id: str) -> str:
    """The device name QEMU has the disk under; ``InvalidState`` if QEMU does not run,
    ``NotFound`` if the disk is not plugged."""
    if not is_active(dom):
        raise InvalidState(f"VM {vm_id} is not running", vm_id=vm_id, volume_id=volume_id)
    disk = parse_domain(_xml(dom, live=True, vm_id=vm_id)).data_disk(volume_id)
    if disk is None:
        raise NotFound(
            f"volume {volume_id} is not attached to VM {vm_id}", vm_id=vm_id, volume_id=volume_id
        )
    return disk.target


def grow(dom: Any, *, vm_id: str, volume_id: str, size_bytes: int) -> None:
    """Grow the plugged disk to ``size_bytes`` (QEMU resizes the image, the guest sees the new
    size at once). Already that size or larger is success: volumes never shrink."""
    target = live_target(dom, vm_id=vm_id, volume_id=volume_id)
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        capacity = int(dom.blockInfo(target, 0)[0])
        if capacity < size_bytes:
            dom.blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


def set_iotune(dom: Any, *, vm_id: str, volume_id: str, tune: IoTune) -> None:
    """Set the disk's I/O limits in the persistent definition and, if QEMU runs, live (every
    field, so zeros lift earlier limits). ``NotFound`` if the VM does not have the disk."""
    config = parse_domain(_xml(dom, live=False, vm_id=vm_id)).data_disk(volume_id)
    if config is None:
        raise NotFound(
            f"volume {volume_id} is not attached to VM {vm_id}", vm_id=vm_id, volume_id=volume_id
        )
    limits = tune.limits()
    if is_active(dom):
        target = live_target(dom, vm_id=vm_id, volume_id=volume_id)
        with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
            dom.setBlockIoTune(target, limits, LIVE)
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        dom.setBlockIoTune(config.target, limits, CONFIG)


# --- external snapshots and block pulls ---------------------------------------------------------
#
# What libvirt 9.0 does (verified on the testbed): a disk-only external snapshot switches the
# live disk and also points the persistent definition at the new file, but writes the backing
# chain it knows into that definition as explicit ``<backingStore>`` elements, which libvirt
# then trusts at the next start instead of reading the images. A block pull likewise updates
# the persistent chain. Chains change offline here (``qemu-img rebase``, reverts), so after
# either operation the persistent disk is rewritten without ``<backingStore>``: libvirt reads the
# chain from the image headers at each start.


def _disk_element(root: ET.Element, volume_id: str) -> ET.Element | None:
    alias = disk_alias(volume_id)
    for disk in root.iterfind("devices/disk"):
        found = disk.find("alias")
        if found is not None and found.get("name") == alias:
            return disk
    return None


def _source_of(disk: ET.Element) -> str | None:
    source = disk.find("source")
    if source is None:
        return None
    return source.get("file") or source.get("dev") or source.get("name")


def live_chain(dom: Any, *, vm_id: str, volume_id: str) -> tuple[str, str | None, list[str]]:
    """The disk's target device, its active file and the files under it (nearest first) as
    the running QEMU has them; ``InvalidState`` unless QEMU runs, ``NotFound`` if the disk is
    not plugged."""
    if not is_active(dom):
        raise InvalidState(f"VM {vm_id} is not running", vm_id=vm_id, volume_id=volume_id)
    disk = _disk_element(ET.fromstring(_xml(dom, live=True, vm_id=vm_id)), volume_id)
    if disk is None:
        raise NotFound(
            f"volume {volume_id} is not attached to VM {vm_id}", vm_id=vm_id, volume_id=volume_id
        )
    target = disk.find("target")
    chain: list[str] = []
    layer = disk.find("backingStore")
    while layer is not None and (path := _source_of(layer)) is not None:
        chain.append(path)
        layer = layer.find("backingStore")
    return (target.get("dev", "") if target is not None else ""), _source_of(disk), chain


def snapshot_xml(targets: list[str], target: str, path: str) -> str:
    """The ``<domainsnapshot>`` switching ``target`` to the existing qcow2 file ``path`` and
    leaving every other disk of ``targets`` alone."""
    root = ET.Element("domainsnapshot")
    disks = sub(root, "disks")
    for dev in targets:
        if dev != target:
            sub(disks, "disk", name=dev, snapshot="no")
    disk = sub(disks, "disk", name=target, snapshot="external", type="file")
    sub(disk, "driver", type="qcow2")
    sub(disk, "source", file=path)
    return ET.tostring(root, encoding="unicode")


def snapshot(dom: Any, *, vm_id: str, volume_id: str, path: str, quiesce: bool) -> None:
    """Switch the live disk to the overlay ``path`` (a disk-only external snapshot, reusing the
    file) unless it is on it already; then ``persist_file``."""
    target, active, _ = live_chain(dom, vm_id=vm_id, volume_id=volume_id)
    if not _same(active, path):
        xml = snapshot_xml(list(disk_targets(_xml(dom, live=True, vm_id=vm_id))), target, path)
        flags = SNAPSHOT_FLAGS
        if quiesce:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
        with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
            dom.snapshotCreateXML(xml, flags)
    persist_file(dom, vm_id=vm_id, volume_id=volume_id, path=path)


def persist_file(dom: Any, *, vm_id: str, volume_id: str, path: str) -> None:
    """Make the persistent definition's disk use the file ``path`` with no ``<backingStore>``
    (see above), redefining the domain if it does not. The definition is read with its secrets
    (VNC password) so that nothing is lost."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        root = ET.fromstring(dom.XMLDesc(flags))
    disk = _disk_element(root, volume_id)
    if disk is None:
        raise NotFound(
            f"volume {volume_id} is not in the definition of VM {vm_id}",
            vm_id=vm_id,
            volume_id=volume_id,
        )
    source, chain = disk.find("source"), disk.findall("backingStore")
    if source is not None and _same(source.get("file"), path) and not chain:
        return
    if source is None or disk.get("type") != "file":
        raise InvalidState(
            f"the disk of volume {volume_id} in VM {vm_id} is not a file disk",
            vm_id=vm_id,
            volume_id=volume_id,
        )
    source.attrib.clear()
    source.set("file", path)
    for element in chain:
        disk.remove(element)
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        dom.connect().defineXML(ET.tostring(root, encoding="unicode"))


def pull_state(
    dom: Any, *, vm_id: str, volume_id: str, base: str | None
) -> tuple[str, bool, bool, int]:
    """Where a pull of the disk onto ``base`` stands: (target, job running, done, virtual
    size in bytes). ``InvalidInput`` if ``base`` is not under the active file."""
    target, active, chain = live_chain(dom, vm_id=vm_id, volume_id=volume_id)
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        job = dom.blockJobInfo(target, 0)
        size = int(dom.blockInfo(target, 0)[0])
    done = _same(chain[0], base) if chain else base is None
    if not job and not done and base is not None and not any(_same(p, base) for p in chain):
        raise InvalidInput(
            f"{base} is not under the active file {active} of volume {volume_id}",
            vm_id=vm_id,
            volume_id=volume_id,
            base=base,
            chain=chain,
        )
    return target, bool(job), done, size


def root_pull_state(dom: Any, *, vm_id: str) -> tuple[bool, bool, int]:
    """The live VM's root disk (``vda``): (block job running, standalone, virtual size).
    ``InvalidState`` unless QEMU runs."""
    if not is_active(dom):
        raise InvalidState(f"VM {vm_id} is not running", vm_id=vm_id)
    root = ET.fromstring(_xml(dom, live=True, vm_id=vm_id))
    disk = next(
        (d for d in root.iterfind("devices/disk") if d.find("target[@dev='vda']") is not None),
        None,
    )
    if disk is None:
        raise NotFound(f"VM {vm_id} has no root disk", vm_id=vm_id)
    layer = disk.find("backingStore")
    standalone = layer is None or _source_of(layer) is None
    with libvirt_errors(vm_id=vm_id):
        job = dom.blockJobInfo("vda", 0)
        size = int(dom.blockInfo("vda", 0)[0])
    return bool(job), standalone, size


def start_copy(dom: Any, *, vm_id: str, target: str, dest: str) -> None:
    """Start a full block copy (mirror) of the disk ``target`` into a new qcow2 file ``dest``
    (a transient job: allowed on a persistent domain, gone with the domain's QEMU)."""
    xml = f"<disk type='file'><source file={quoteattr(dest)}/><driver type='qcow2'/></disk>"
    with libvirt_errors(vm_id=vm_id):
        dom.blockCopy(target, xml, None, libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)


def copy_ready(dom: Any, vm_id: str) -> bool:
    """Whether the root disk's block copy is in step (its live ``<mirror ready='yes'>``);
    ``DriverError`` if the job is gone (it failed)."""
    root = ET.fromstring(_xml(dom, live=True, vm_id=vm_id))
    for disk in root.iterfind("devices/disk"):
        if disk.find("target[@dev='vda']") is None:
            continue
        mirror = disk.find("mirror")
        if mirror is None:
            raise DriverError("the block copy of the root disk stopped", vm_id=vm_id)
        return mirror.get("ready") == "yes"
    raise NotFound(f"VM {vm_id} has no root disk", vm_id=vm_id)


def start_pull(dom: Any, *, vm_id: str, volume_id: str, target: str, base: str | None) -> None:
    """Start the block pull (``blockRebase`` without copy: QEMU's block-stream) onto ``base``."""
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        dom.blockRebase(target, base, 0, 0)


def job_running(dom: Any, *, vm_id: str, volume_id: str, target: str) -> bool:
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        return bool(dom.blockJobInfo(target, 0))


def abort_job(dom: Any, *, vm_id: str, volume_id: str, target: str) -> None:
    """Cancel the disk's block job (a cancelled pull leaves a consistent chain)."""
    with libvirt_errors(vm_id=vm_id, volume_id=volume_id):
        if dom.blockJobInfo(target, 0):
            dom.blockJobAbort(target, 0)


def pulled(dom: Any, *, vm_id: str, volume_id: str, base: str | None) -> None:
    """After the job: ``DriverError`` unless the active file is now backed by ``base``
    directly (a failed job ends like a finished one: only the chain tells), then
    ``persist_file``."""
    _, active, chain = live_chain(dom, vm_id=vm_id, volume_id=volume_id)
    done = _same(chain[0], base) if chain else base is None
    if not done:
        raise DriverError(
            f"the block pull of volume {volume_id} onto {base or 'nothing'} did not complete",
            vm_id=vm_id,
            volume_id=volume_id,
            base=base,
            chain=chain,
        )
    if active is not None:
        persist_file(dom, vm_id=vm_id, volume_id=volume_id, path=active)


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return os.path.normpath(a) == os.path.normpath(b)
