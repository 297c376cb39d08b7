"""vm.start/stop/reboot/pause/resume: one agent call between a transitional and a final status."""

from __future__ import annotations

from typing import Any

from corral.api.agent import VmPower
from corral.api.errors import CorralError
from corral.api.vms import PowerState, VmAction, VmStatus
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import set_vm

# action -> (status while it runs, status and power state after it)
TRANSITIONS: dict[VmAction, tuple[VmStatus, VmStatus, PowerState]] = {
    VmAction.start: (VmStatus.starting, VmStatus.running, PowerState.running),
    VmAction.stop: (VmStatus.stopping, VmStatus.stopped, PowerState.stopped),
    VmAction.reboot: (VmStatus.rebooting, VmStatus.running, PowerState.running),
    VmAction.pause: (VmStatus.paused, VmStatus.paused, PowerState.paused),
    VmAction.resume: (VmStatus.starting, VmStatus.running, PowerState.running),
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


async def _restore(ctx: Ctx, err: CorralError) -> None:
    await set_vm(ctx, status=ctx.params["previous_status"])


VM_POWER = {
    action: Workflow(f"vm.{action.value}", steps=(_power_step(action),), on_failure=_restore)
    for action in VmAction
}
