"""vm.delete: stop, undefine, delete the disk, then release the claim and drop the row.

Until the disk deletion starts every step is undone on failure: the VM comes back as it was when
the operation started (status, power state, definition; a running guest is started again). The
disk deletion is the point of no return: from there the workflow only goes forward (retrying), and
if it still fails the VM stays, in ``error``, for a retried delete. A VM whose rollback could not be
finished is also left in ``error``. A retried delete works whatever a failed one left behind
(stopping or undefining an absent VM and deleting an absent disk succeed).
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import DiskDelete, VmDefine, VmPower, VmUndefine
from corral.api.errors import CorralError, NotFound
from corral.api.vms import PowerState, VmStatus
from corral.server.db.tables import VmRow, VolumeRow
from corral.server.services import net_sync
from corral.server.services.placement import release
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import (
    forget_vm,
    full_spec,
    load_vm,
    repeatable_task,
    set_vm,
    vm_absent,
)
from corral.server.workflows.vm_snapshot_common import delete_memory_files
from corral.server.workflows.volume_common import load_volume
from corral.server.workflows.volume_delete import delete_from_pool, forget_volume


async def _mark(ctx: Ctx) -> dict[str, Any]:
    """Record the status and power state the VM has now (the delete may have been queued behind
    other operations: what it had when the request was made may be stale)."""
    vm = await load_vm(ctx)
    await set_vm(ctx, status=VmStatus.deleting)
    return {"status": vm.status, "power": vm.power_state}


def _before(ctx: Ctx) -> tuple[str, str]:
    """(status, power state) of the VM before this operation."""
    mark = ctx.results.get("mark") or {}
    status = mark.get("status") or ctx.params.get("previous_status") or VmStatus.error
    power = mark.get("power") or ctx.params.get("previous_power") or PowerState.stopped
    return str(status), str(power)


async def _unmark(ctx: Ctx) -> None:
    status, _ = _before(ctx)
    await set_vm(ctx, status=status)


def _host(ctx: Ctx) -> str | None:
    host: str | None = ctx.params.get("host_id")
    return host


async def _stop(ctx: Ctx) -> dict[str, Any]:
    host = _host(ctx)
    if host is None:
        return {}
    await ctx.progress(10, "stopping the VM")
    vm_id = ctx.params["vm_id"]
    try:
        await agent_task(ctx, host, "stop", VmPower(kind="vm.stop", vm_id=vm_id, force=True))
    except CorralError as err:
        if not vm_absent(err, vm_id):  # a failed delete got further already: nothing runs
            raise
    await set_vm(ctx, power_state=PowerState.stopped)
    return {}


async def _restart(ctx: Ctx) -> None:
    host = _host(ctx)
    _, power = _before(ctx)
    if host is None or power not in (PowerState.running, PowerState.paused):
        return
    vm_id = ctx.params["vm_id"]
    await repeatable_task(ctx, host, "undo-stop", VmPower(kind="vm.start", vm_id=vm_id))
    if power == PowerState.paused:
        await repeatable_task(ctx, host, "undo-stop-pause", VmPower(kind="vm.pause", vm_id=vm_id))
    await set_vm(ctx, power_state=power)


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
        await repeatable_task(ctx, host, "undo-undefine", VmDefine(spec=await full_spec(ctx, vm)))


async def _delete_disk(ctx: Ctx) -> dict[str, Any]:
    """The host-local root disk, or the root volume (with its snapshots' files), and the
    memory files of the VM's whole-VM snapshots."""
    host = _host(ctx)
    vm = await load_vm(ctx)
    if host is None:
        return {}
    await ctx.progress(70, "deleting the disk")
    if vm.root_volume_id is None:
        await repeatable_task(ctx, host, "disk", DiskDelete(vm_id=vm.id))
    else:
        try:
            vol, pool = await load_volume(ctx, vm.root_volume_id)
        except NotFound:
            pass
        else:
            if vol.instantiated:
                await delete_from_pool(ctx, vol, pool, host, "root")
    await delete_memory_files(ctx, vm.id)
    return {}


async def _forget(ctx: Ctx) -> dict[str, Any]:
    """Release the claim, drop the rows (NICs and addresses with them), then take the NICs
    off the hosts in the background (its host and those whose state named them)."""
    vm_id = ctx.params["vm_id"]
    hosts = await net_sync.neighbours(ctx.deps, vm_id, None)
    async with ctx.deps.sessionmaker.begin() as s:
        await release(s, ctx.params["vm_id"])
        vm = await s.get(VmRow, ctx.params["vm_id"])
        if vm is not None:
            root = await s.get(VolumeRow, vm.root_volume_id) if vm.root_volume_id else None
            await forget_vm(s, vm)
            if root is not None:
                await forget_volume(s, root)
    net_sync.hosts_changed(ctx.deps, hosts)
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    journal = await ctx.engine.journal(ctx.op_id)
    if any(r.name == "delete_disk" and r.state != "undone" for r in journal):
        why = f"delete failed: {err.message} (delete it again to finish)"
        await set_vm(ctx, status=VmStatus.error, power_state=PowerState.absent, error=why)
    elif incomplete := [r.name for r in journal if r.state == "undo_failed"]:
        why = f"delete failed and could not be undone ({', '.join(incomplete)}): {err.message}"
        await set_vm(ctx, status=VmStatus.error, error=why)


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
