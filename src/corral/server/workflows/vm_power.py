"""vm.start/stop/reboot/pause/resume: one agent call between a transitional and a final status."""

from __future__ import annotations

from typing import Any

from corral.api.agent import VmPower
from corral.api.errors import CorralError, InvalidState
from corral.api.vms import PowerState, VmAction, VmStatus
from corral.server.db.tables import VmRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import load_vm, set_vm

# action -> (status while it runs, status and power state after it)
TRANSITIONS: dict[VmAction, tuple[VmStatus, VmStatus, PowerState]] = {
    VmAction.start: (VmStatus.starting, VmStatus.running, PowerState.running),
    VmAction.stop: (VmStatus.stopping, VmStatus.stopped, PowerState.stopped),
    VmAction.reboot: (VmStatus.rebooting, VmStatus.running, PowerState.running),
    VmAction.pause: (VmStatus.paused, VmStatus.paused, PowerState.paused),
    VmAction.resume: (VmStatus.starting, VmStatus.running, PowerState.running),
}

# statuses of an operation in progress on the VM
IN_PROGRESS = {VmStatus.starting, VmStatus.stopping, VmStatus.rebooting, VmStatus.resizing}

STATUS_OF_POWER = {
    PowerState.running: VmStatus.running,
    PowerState.paused: VmStatus.paused,
    PowerState.stopped: VmStatus.stopped,
    PowerState.crashed: VmStatus.stopped,
}

# action -> the statuses it can start from
ALLOWED_FROM: dict[VmAction, set[VmStatus]] = {
    VmAction.start: {VmStatus.stopped, VmStatus.running, VmStatus.error},
    VmAction.stop: {VmStatus.running, VmStatus.paused, VmStatus.stopped, VmStatus.error},
    VmAction.reboot: {VmStatus.running},
    VmAction.pause: {VmStatus.running, VmStatus.paused},
    VmAction.resume: {VmStatus.paused, VmStatus.running},
}


def _power_step(action: VmAction) -> Step:
    during, after, power = TRANSITIONS[action]

    async def do(ctx: Ctx) -> dict[str, Any]:
        vm = await load_vm(ctx)
        check_allowed(vm, action)  # again: an operation queued behind others may find a new state
        await set_vm(ctx, status=during)
        payload = VmPower(
            kind=f"vm.{action.value}",
            vm_id=ctx.params["vm_id"],
            force=bool(ctx.params.get("force", False)),
            timeout=float(ctx.params.get("timeout", 60.0)),
        )
        await agent_task(ctx, ctx.params["host_id"], action.value, payload)
        await set_vm(ctx, status=after, power_state=power, error=None)
        return {}

    return Step(action.value, do, NO_UNDO)


def check_allowed(vm: VmRow, action: VmAction) -> None:
    """``InvalidState`` unless ``action`` can start from the VM's status (a status of an operation
    in progress is accepted: the action then queues behind it and is checked again when it runs)."""
    status = VmStatus(vm.status)
    if status in ALLOWED_FROM[action] or status in IN_PROGRESS:
        return
    need = ", ".join(sorted(a.value for a in ALLOWED_FROM[action]))
    raise InvalidState(
        f"cannot {action.value} VM {vm.name!r}: it is {vm.status} (needs {need})",
        vm=vm.name,
        status=vm.status,
    )


async def restore_status(ctx: Ctx, err: CorralError) -> None:
    """After a failed action the VM's status follows what the hypervisor last said."""
    vm = await load_vm(ctx)
    await set_vm(ctx, status=STATUS_OF_POWER.get(PowerState(vm.power_state), VmStatus.error))


VM_POWER = {
    action: Workflow(f"vm.{action.value}", steps=(_power_step(action),), on_failure=restore_status)
    for action in VmAction
}
