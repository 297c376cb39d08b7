"""The NIC half of ``LibvirtDriver``: hot-plug and unplug of Corral NICs (taps on Open vSwitch).

A NIC is found by its alias ``ua-nic-<nic_id>`` in the persistent definition (``config``) and,
while QEMU runs (running or paused), in the live one. Each step looks at both and only changes
what is missing or still there, so every call can be repeated. The blocking functions run in
worker threads through the driver's ``_run``; the class adds the waiting (a hot-unplug polls
the live definition until the guest released the device).

libvirt does the Open vSwitch part itself (the system ``ovs-vsctl``): the port is added when
the device is plugged (domain start or hot-plug) and deleted when it goes (unplug, VM stop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from corral.agent.compute.libvirt import domains
from corral.agent.compute.libvirt.connection import Connection
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.unplug import unplug
from corral.agent.compute.libvirt.xml.nic import nic_alias, nic_interface
from corral.agent.compute.libvirt.xml.parse import NicFacts, nic_facts
from corral.agent.compute.libvirt.xml.util import render
from corral.api.agent import NicSpec
from corral.api.errors import InvalidState
from corral.api.vms import PowerState

T = TypeVar("T")

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
_ACTIVE = (PowerState.running, PowerState.paused)


def is_active(dom: Any) -> bool:
    """Whether QEMU runs the domain (running or paused): live changes are possible."""
    return domains.state_of(dom) in _ACTIVE


def _nics(dom: Any, *, live: bool, vm_id: str) -> tuple[NicFacts, ...]:
    with libvirt_errors(vm_id=vm_id):
        xml = str(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))
    return nic_facts(xml)


def _missing(dom: Any, nic: NicSpec, *, live: bool, vm_id: str) -> bool:
    """Whether the NIC is absent from the live or persistent definition; ``InvalidState`` if
    another Corral NIC there has its MAC or its port."""
    for other in _nics(dom, live=live, vm_id=vm_id):
        if other.nic_id == nic.nic_id:
            return False
        if other.mac == nic.mac or other.port == nic.port:
            raise InvalidState(
                f"VM {vm_id} has another NIC with MAC {nic.mac} or port {nic.port}",
                vm_id=vm_id,
                nic_id=nic.nic_id,
                used_by=other.nic_id,
            )
    return True


def attach(dom: Any, nic: NicSpec, *, vm_id: str) -> None:
    """Add the NIC to the persistent definition and, if QEMU runs, hot-plug it (one
    ``attachDeviceFlags`` call with the flags of what is missing). Already there is success."""
    xml = render(nic_interface(nic).element())
    flags = 0
    if _missing(dom, nic, live=False, vm_id=vm_id):
        flags |= CONFIG
    if is_active(dom) and _missing(dom, nic, live=True, vm_id=vm_id):
        flags |= LIVE
    if flags:
        with libvirt_errors(vm_id=vm_id, nic_id=nic.nic_id):
            dom.attachDeviceFlags(xml, flags)


def plugged(dom: Any, *, vm_id: str, nic_id: str) -> bool:
    """Whether the running QEMU still has the NIC (False when the domain is not active)."""
    if not is_active(dom):
        return False
    return any(n.nic_id == nic_id for n in _nics(dom, live=True, vm_id=vm_id))


def request_unplug(dom: Any, *, vm_id: str, nic_id: str) -> bool:
    """Ask the guest to release the NIC if QEMU still has it; True if it does (the caller then
    waits for ``plugged`` to turn False). Repeating the request while one is pending is fine."""
    if not plugged(dom, vm_id=vm_id, nic_id=nic_id):
        return False
    with libvirt_errors(vm_id=vm_id, nic_id=nic_id):
        dom.detachDeviceAlias(nic_alias(nic_id), LIVE)
    return True


def remove_config(dom: Any, *, vm_id: str, nic_id: str) -> None:
    """Remove the NIC from the persistent definition; absent is success."""
    if not any(n.nic_id == nic_id for n in _nics(dom, live=False, vm_id=vm_id)):
        return
    with libvirt_errors(vm_id=vm_id, nic_id=nic_id):
        dom.detachDeviceAlias(nic_alias(nic_id), CONFIG)


class LibvirtNicOps:
    """Corral's NICs of Corral's domains, found by their alias ``ua-nic-<nic_id>``."""

    _conn: Connection
    _poll: float

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _dom(self, vm_id: str) -> Any:
        raise NotImplementedError

    async def power_state(self, vm_id: str) -> PowerState:
        raise NotImplementedError

    async def attach_nic(self, vm_id: str, nic: NicSpec) -> None:
        """Add the NIC to the persistent definition and hot-plug it if QEMU runs (running or
        paused): libvirt creates the tap ``nic.port`` and adds it to the bridge. Attached
        (same NIC id) is success; ``NotFound`` if the VM is not defined, ``InvalidState`` if
        another NIC has its MAC or port, ``DriverError`` if libvirt or OVS refuses (e.g. the
        bridge does not exist: nothing is left plugged)."""
        await self._run(lambda: attach(self._dom(vm_id), nic, vm_id=vm_id))

    async def detach_nic(self, vm_id: str, nic_id: str, timeout: float) -> None:
        """Hot-unplug the NIC if QEMU has it, waiting up to ``timeout`` s (polling the live
        definition) for the guest to release it, then remove it from the persistent
        definition. If the guest keeps it: ``InvalidState`` ("the guest did not release the
        NIC"), the persistent definition untouched (the unplug request stays pending: a later
        detach finishes once the guest lets go). Not attached, or the VM not defined, is
        success."""
        nic_alias(nic_id)  # InvalidInput for an unusable id, before anything happens

        def dom_or_none() -> Any | None:
            return domains.lookup(self._conn.get(), vm_id)

        def request() -> bool:
            dom = dom_or_none()
            return dom is not None and request_unplug(dom, vm_id=vm_id, nic_id=nic_id)

        def still_plugged() -> bool:
            dom = dom_or_none()
            return dom is not None and plugged(dom, vm_id=vm_id, nic_id=nic_id)

        def remove() -> None:
            dom = dom_or_none()
            if dom is not None:
                remove_config(dom, vm_id=vm_id, nic_id=nic_id)

        await unplug(
            self._run,
            lambda: self.power_state(vm_id),
            request=request,
            plugged=still_plugged,
            remove=remove,
            what="NIC",
            timeout=timeout,
            poll=self._poll,
            vm_id=vm_id,
            nic_id=nic_id,
        )
