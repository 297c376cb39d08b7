"""vm.delete: stop, undefine, delete the disk, then release the claim and drop the row.

Until the disk deletion starts every step is undone on failure (the VM comes back as it was); the
disk deletion is the point of no return: from there the workflow only goes forward (retrying), and if
it still fails the VM stays, in ``error``, for a retried delete.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import DiskDelete, VmDefine, VmPower, VmUndefine
from corral.api.errors import CorralError
from corral.api.vms import PowerState, VmStatus
from corral.server.db.tables import VmRow
from corral.server.services.placement import release
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import load_vm, set_vm, vm_spec


async def _mark(ctx: Ctx) -> dict[str, Any]:
    vm = await load_vm(ctx)
    await set_vm(ctx, status=VmStatus.deleting)
    return {"status": ctx.params.get("previous_status", vm.status), "power": vm.power_state}


async def _unmark(ctx: Ctx) -> None:
    await set_vm(ctx, status=ctx.params.get("previous_status", VmStatus.error))


def _host(ctx: Ctx) -> str | None:
    host: str | None = ctx.params.get("host_id")
    return host


async def _stop(ctx: Ctx) -> dict[str, Any]:
    host = _host(ctx)
    if host is None:
        return {}
    await ctx.progress(10, "stopping the VM")
    await agent_task(
        ctx, host, "stop", VmPower(kind="vm.stop", vm_id=ctx.params["vm_id"], force=True)
    )
    await set_vm(ctx, power_state=PowerState.stopped)
    return {}


async def _restart(ctx: Ctx) -> None:
    host = _host(ctx)
    if host is not None and ctx.params.get("previous_power") == PowerState.running:
        await agent_task(
            ctx, host, "undo-stop", VmPower(kind="vm.start", vm_id=ctx.params["vm_id"])
        )
        await set_vm(ctx, power_state=PowerState.running)


async def _undefine(ctx: Ctx) -> dict[str, Any]:
    host = _host(ctx)
    if host is not None:
        await ctx.progress(40, "undefining the VM")
        await agent_task(ctx, host, "undefine", VmUndefine(vm_id=ctx.params["vm_id"]))
    return {}


async def _redefine(ctx: Ctx) -> None:
    host = _host(ctx)
    if host is not None:
        vm = await load_vm(ctx)
        await agent_task(ctx, host, "undo-undefine", VmDefine(spec=vm_spec(vm)))


async def _delete_disk(ctx: Ctx) -> dict[str, Any]:
    host = _host(ctx)
    if host is not None:
        await ctx.progress(70, "deleting the disk")
        await agent_task(ctx, host, "disk", DiskDelete(vm_id=ctx.params["vm_id"]))
    return {}


async def _forget(ctx: Ctx) -> dict[str, Any]:
    async with ctx.deps.sessionmaker.begin() as s:
        await release(s, ctx.params["vm_id"])
        vm = await s.get(VmRow, ctx.params["vm_id"])
        if vm is not None:
            await s.delete(vm)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    journal = await ctx.engine.journal(ctx.op_id)
    if any(r.name == "delete_disk" and r.state != "undone" for r in journal):
        await set_vm(ctx, status=VmStatus.error, error=f"delete failed: {err.message}")


VM_DELETE = Workflow(
    "vm.delete",
    steps=(
        Step("mark", _mark, _unmark),
        Step("stop", _stop, _restart),
        Step("undefine", _undefine, _redefine),
        Step("delete_disk", _delete_disk, NO_UNDO),
        Step("forget", _forget, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="delete_disk",
)
