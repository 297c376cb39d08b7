"""Map libvirt domain states and lifecycle events to Corral's ``PowerState``."""

from __future__ import annotations

import libvirt

from corral.api.vms import PowerState

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.unknown,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.running,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.running,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.paused,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.running,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.stopped,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.crashed,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.paused,
}


def power_state(state: int, reason: int) -> PowerState:
    """``virDomainGetState``'s (state, reason) as a PowerState; shut off by a crash is crashed."""
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return PowerState.crashed
    return _STATES.get(state, PowerState.unknown)


_EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
_STOPPED_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from_snapshot",
}


def event_power_state(event: int, detail: int) -> tuple[PowerState, str] | None:
    """The PowerState a lifecycle event leads to and a reason (``stopped:shutdown``), or None
    for events that do not change it (defined; ``shutdown`` announces the ``stopped`` to come)."""
    name = _EVENT_NAMES.get(event)
    if name is None or event in (
        libvirt.VIR_DOMAIN_EVENT_DEFINED,
        libvirt.VIR_DOMAIN_EVENT_SHUTDOWN,
    ):
        return None
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        why = _STOPPED_DETAILS.get(detail, str(detail))
        state = PowerState.crashed if why in ("crashed", "failed") else PowerState.stopped
        return state, f"stopped:{why}"
    state = {
        libvirt.VIR_DOMAIN_EVENT_UNDEFINED: PowerState.absent,
        libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.running,
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.paused,
        libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.running,
        libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: PowerState.paused,
        libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.crashed,
    }[event]
    return state, f"{name}:{detail}"
