"""Blocking operations on the data-volume disks of a domain, run by the driver in worker threads.

A data volume's disk is found by its alias ``ua-vol-<volume_id>``, in the persistent definition
(``config``) and, while QEMU runs (running or paused), in the live one. Each function looks at
both and only changes what is missing or still there, so every step can be repeated.
"""

from __future__ import annotations

from typing import Any

import libvirt

from corral.agent.compute.libvirt.domains import state_of
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.xml.compose import disk_alias
from corral.agent.compute.libvirt.xml.disk import IoTune
from corral.agent.compute.libvirt.xml.parse import disk_targets, parse_domain
from corral.api.errors import InvalidState, NotFound
from corral.api.vms import PowerState

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
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
