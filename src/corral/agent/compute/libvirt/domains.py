"""Blocking operations on Corral's domains, run by the driver in worker threads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from corral.agent.compute.libvirt.errors import is_no_domain, libvirt_errors, translate
from corral.agent.compute.libvirt.naming import domain_name, vm_id_of
from corral.agent.compute.libvirt.states import power_state
from corral.agent.compute.libvirt.xml.metadata import NAMESPACE
from corral.agent.compute.libvirt.xml.parse import parse_domain
from corral.api.errors import InvalidState, NotFound
from corral.api.vms import PowerState

_BASIC_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
)
UNDEFINE_FLAGS = (
    _BASIC_UNDEFINE_FLAGS
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
"""Remove managed save, snapshot and checkpoint metadata and UEFI variables with the domain."""
_UNSUPPORTED = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG)


def lookup(conn: Any, vm_id: str) -> Any | None:
    """The domain of ``vm_id``, or None if it is not defined."""
    try:
        return conn.lookupByName(domain_name(vm_id))
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return None
        raise translate(exc, vm_id=vm_id) from exc


def require(conn: Any, vm_id: str) -> Any:
    """The domain of ``vm_id``; ``NotFound`` if it is not defined."""
    dom = lookup(conn, vm_id)
    if dom is None:
        raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
    return dom


def state_of(dom: Any) -> PowerState:
    """The domain's PowerState now; ``absent`` if it vanished meanwhile."""
    try:
        state, reason = dom.state()
    except libvirt.libvirtError as exc:
        if is_no_domain(exc):
            return PowerState.absent
        raise translate(exc, domain=dom.name()) from exc
    return power_state(state, reason)


def vm_power_state(conn: Any, vm_id: str) -> PowerState:
    dom = lookup(conn, vm_id)
    return PowerState.absent if dom is None else state_of(dom)


def check_resize(dom: Any, *, vm_id: str, cpus: int, memory_mb: int) -> None:
    """``InvalidState`` if the running domain's definition has other CPUs or memory."""
    with libvirt_errors(vm_id=vm_id):
        if not dom.isActive():
            return
        current = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    if (current.cpus, current.memory_mb) != (cpus, memory_mb):
        raise InvalidState(
            "stop the VM before changing its CPUs or memory",
            vm_id=vm_id,
            cpus=current.cpus,
            memory_mb=current.memory_mb,
        )


def destroy(dom: Any, *, vm_id: str) -> None:
    """Power the domain off at once; already off is success."""
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if is_no_domain(exc) or state_of(dom) in (PowerState.stopped, PowerState.absent):
            return
        raise translate(exc, vm_id=vm_id) from exc


def undefine(conn: Any, vm_id: str) -> None:
    """Destroy (if running) and undefine; absent is success."""
    dom = lookup(conn, vm_id)
    if dom is None:
        return
    if state_of(dom) not in (PowerState.stopped, PowerState.crashed, PowerState.absent):
        destroy(dom, vm_id=vm_id)
    for flags in (UNDEFINE_FLAGS, _BASIC_UNDEFINE_FLAGS):
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            if is_no_domain(exc):
                return
            if exc.get_error_code() in _UNSUPPORTED and flags != _BASIC_UNDEFINE_FLAGS:
                continue  # hypervisors without checkpoints or NVRAM refuse those flags
            raise translate(exc, vm_id=vm_id) from exc


def start(dom: Any, *, vm_id: str) -> None:
    """Boot a stopped or crashed domain; running is success, paused is ``InvalidState``."""
    state = state_of(dom)
    if state == PowerState.paused:
        raise InvalidState("VM is paused; resume it instead", vm_id=vm_id)
    if state not in (PowerState.stopped, PowerState.crashed):
        return
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and state_of(dom) in (
            PowerState.running,
            PowerState.paused,
        ):
            return  # started concurrently
        raise translate(exc, vm_id=vm_id) from exc


def set_paused(dom: Any, *, vm_id: str, paused: bool) -> None:
    """Suspend a running domain or resume a paused one; already there is success, any other
    state is ``InvalidState``."""
    wanted, source = (
        (PowerState.paused, PowerState.running)
        if paused
        else (PowerState.running, PowerState.paused)
    )
    state = state_of(dom)
    if state == wanted:
        return
    if state != source:
        raise InvalidState(f"VM is {state.value}", vm_id=vm_id, power_state=state.value)
    with libvirt_errors(vm_id=vm_id):
        if paused:
            dom.suspend()
        else:
            dom.resume()


def request_shutdown(dom: Any, *, vm_id: str) -> None:
    """Press the ACPI power button (the hypervisor's default method where that is not
    supported), resuming a paused domain first so that its guest sees it. A domain that stopped
    meanwhile is fine."""
    if state_of(dom) == PowerState.paused:
        try:
            set_paused(dom, vm_id=vm_id, paused=False)
        except InvalidState:  # stopped meanwhile; the caller sees it
            return
    try:
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _UNSUPPORTED:
                raise
            dom.shutdown()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID and not is_no_domain(exc):
            raise translate(exc, vm_id=vm_id) from exc


def corral_vms(conn: Any) -> dict[str, PowerState]:
    """Every domain carrying Corral's metadata, by VM id (others are ignored)."""
    with libvirt_errors():
        doms = conn.listAllDomains(0)
    vms: dict[str, PowerState] = {}
    for dom in doms:
        if vm_id_of(dom.name()) is None:
            continue
        try:
            meta = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0))
            state, reason = dom.state()
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_METADATA):
                continue  # vanished meanwhile, or not Corral's
            raise translate(exc, domain=dom.name()) from exc
        vm_id = meta.get("id")
        if vm_id:
            vms[vm_id] = power_state(state, reason)
    return vms
