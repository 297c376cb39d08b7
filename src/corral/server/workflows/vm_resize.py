"""vm.resize (offline): claim the new size on the host, redefine the VM, record the new size."""

from __future__ import annotations

from typing import Any

from corral.api.agent import VmDefine
from corral.api.errors import InvalidState, NoHostAvailable
from corral.api.vms import VmStatus
from corral.server.db.tables import VmRow
from corral.server.identity import quotas
from corral.server.services.placement import resize_claim
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import Ctx, Step, Workflow
from corral.server.workflows.vm_common import full_spec, load_vm, set_vm
from corral.server.workflows.vm_power import restore_status


async def _set_claim(ctx: Ctx, cpus: int, memory_mb: int) -> None:
    async with ctx.deps.sessionmaker.begin() as s:
        vm = await s.get(VmRow, ctx.params["vm_id"])
        if vm is None or (vm.cpus, vm.memory_mb) == (cpus, memory_mb):
            return
        await quotas.adjust(
            s, vm.project_id, vcpus=cpus - vm.cpus, memory_mb=memory_mb - vm.memory_mb
        )
        if not await resize_claim(s, vm, cpus, memory_mb):
            raise NoHostAvailable(
                f"host has no room for {cpus} vCPUs / {memory_mb} MiB", host_id=vm.host_id
            )


async def _claim(ctx: Ctx) -> dict[str, Any]:
    vm = await load_vm(ctx)
    if vm.status != VmStatus.stopped:
        raise InvalidState(f"cannot resize VM {vm.name!r}: it is {vm.status} (stop it first)")
    await set_vm(ctx, status=VmStatus.resizing)
    await _set_claim(ctx, ctx.params["cpus"], ctx.params["memory_mb"])
    return {}


async def _unclaim(ctx: Ctx) -> None:
    await _set_claim(ctx, ctx.params["old_cpus"], ctx.params["old_memory_mb"])


async def _redefine(ctx: Ctx) -> dict[str, Any]:
    vm = await load_vm(ctx)
    await agent_task(ctx, ctx.params["host_id"], "define", VmDefine(spec=await full_spec(ctx, vm)))
    await set_vm(ctx, status=VmStatus.stopped)
    return {}


async def _define_old(ctx: Ctx) -> None:
    vm = await load_vm(ctx)
    spec = (await full_spec(ctx, vm)).model_copy(
        update={"cpus": ctx.params["old_cpus"], "memory_mb": ctx.params["old_memory_mb"]}
    )
    await agent_task(ctx, ctx.params["host_id"], "undo-define", VmDefine(spec=spec))


VM_RESIZE = Workflow(
    "vm.resize",
    steps=(Step("claim", _claim, _unclaim), Step("redefine", _redefine, _define_old)),
    on_failure=restore_status,
)
