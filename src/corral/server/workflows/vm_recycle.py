"""vm.recycle: a VM deleted under the ``delayed`` or ``never`` policy goes to the recycle bin.

Steps: ``stop`` (a live VM is powered off; undo: started again if it ran), ``bin`` (one
transaction: the VM renamed, ``recycled``, its bin entry recorded; see
``services.recycle.to_bin``). The VM keeps its disk, host claim and quota until it is
expunged (``vm.delete``) or restored.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import VmPower
from corral.api.errors import CorralError
from corral.api.vms import PowerState, VmStatus
from corral.server.db.tables import VmRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import load_vm, repeatable_task, set_vm

LIVE = (PowerState.running.value, PowerState.paused.value)


async def _stop(ctx: Ctx) -> dict[str, Any]:
    vm = await load_vm(ctx)
    if vm.power_state not in LIVE:
        return {"stopped": False}
    await ctx.progress(30, "powering off")
    await agent_task(
        ctx, ctx.params["host_id"], "stop", VmPower(kind="vm.stop", vm_id=vm.id, force=True)
    )
    await set_vm(ctx, power_state=PowerState.stopped, status=VmStatus.stopped)
    return {"stopped": True}


async def _start_again(ctx: Ctx) -> None:
    if ctx.params.get("previous_power") not in LIVE:
        return  # it did not run: nothing was stopped
    payload = VmPower(kind="vm.start", vm_id=ctx.params["vm_id"])
    await repeatable_task(ctx, ctx.params["host_id"], "undo-stop", payload)
    await set_vm(ctx, power_state=PowerState.running, status=VmStatus.running)


async def _bin(ctx: Ctx) -> dict[str, Any]:
    from corral.server.services.recycle import to_bin

    async with ctx.deps.sessionmaker.begin() as s:
        vm = await s.get(VmRow, ctx.params["vm_id"])
        if vm is None:
            return {}
        entry = await to_bin(ctx.deps, s, "vm", vm, deleted_by=ctx.params.get("user_id"))
    return {"entry_id": entry}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """The VM is as it was (the stop undone); only its status may need putting back."""
    await set_vm(ctx, status=ctx.params.get("previous_status", VmStatus.stopped.value))


VM_RECYCLE = Workflow(
    "vm.recycle",
    steps=(Step("stop", _stop, _start_again), Step("bin", _bin, NO_UNDO)),
    on_failure=_on_failure,
)
