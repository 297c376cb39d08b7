"""vm.create: record + claim (done in the request, with the NICs and their addresses), network
(the host gets the NICs' segments, DHCP entries and flows), disk, data volumes, define, start,
finalize.

Every step can be undone, so a failure anywhere leaves no domain, no disk, no claim and no row.
If an undo fails even after the engine's retries (e.g. the agent stays unreachable), the rollback
keeps the row and its claim and marks the VM ``error``: what is left on the host stays known and a
``vm delete`` removes it. The same happens when ``finalize`` (past the point of no return) keeps
failing.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import (
    DiskCreate,
    DiskDelete,
    VmDefine,
    VmPower,
    VmUndefine,
    VolumeDeleteTask,
)
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
    image_ref,
    load_vm_and_image,
    repeatable_task,
    rollback_incomplete,
    set_vm,
    set_vm_with_journal,
    vm_absent,
    vm_spec,
)
from corral.server.workflows.volume_attach import volume_create_task
from corral.server.workflows.volume_common import (
    load_volume,
    set_volume,
    settle,
    volume_ref,
)
from corral.server.workflows.volume_delete import forget_volume


async def _record(ctx: Ctx) -> dict[str, Any]:
    return {}  # done by the request: the VM row exists with status ``creating``


async def _unrecord(ctx: Ctx) -> None:
    if await rollback_incomplete(ctx):
        return  # keep the row: it is how the leftovers can be found and deleted
    async with ctx.deps.sessionmaker.begin() as s:
        vm = await s.get(VmRow, ctx.params["vm_id"])
        if vm is not None:
            await forget_vm(s, vm)
        for vid in ctx.params.get("volumes", []):  # made for this VM (root first): they go too
            vol = await s.get(VolumeRow, vid)
            if vol is not None:
                await forget_volume(s, vol)


async def _claim(ctx: Ctx) -> dict[str, Any]:
    return {"host_id": ctx.params["host_id"]}  # done by the request: placement + claim


async def _release(ctx: Ctx) -> None:
    if await rollback_incomplete(ctx):
        return  # what is left on the host still uses it; ``vm delete`` releases it
    async with ctx.deps.sessionmaker.begin() as s:
        await release(s, ctx.params["vm_id"])


async def _network(ctx: Ctx) -> dict[str, Any]:
    """The host gets the VM's port groups, DHCP entries and firewall flows before the VM is
    defined (its ports plug into the segments); the other hosts concerned (VXLAN tunnels,
    security-group members) follow in the background."""
    if not ctx.params.get("nics"):
        return {}
    await ctx.progress(15, "connecting the NICs")
    await net_sync.connect(ctx.deps, ctx.params["vm_id"], ctx.params["host_id"])
    return {}


async def _disconnect(ctx: Ctx) -> None:
    """Forget the NICs (their addresses go back to the pools) and take them off the hosts."""
    if not ctx.params.get("nics") or await rollback_incomplete(ctx):
        return  # incomplete: the VM may still be defined with them; ``vm delete`` cleans up
    await net_sync.disconnect(ctx.deps, ctx.params["vm_id"], ctx.params["host_id"])


async def _disk(ctx: Ctx) -> dict[str, Any]:
    """The host-local root disk (none when the root is a volume: made by ``volumes``)."""
    vm, img = await load_vm_and_image(ctx)
    if vm.root_volume_id is not None:
        return {"root_volume": True}
    await ctx.progress(20, "preparing the disk")
    payload = DiskCreate(vm_id=vm.id, image=image_ref(img), size_gb=vm.disk_gb)
    return await agent_task(ctx, ctx.params["host_id"], "disk", payload)


async def _delete_disk(ctx: Ctx) -> None:
    if ctx.results.get("disk", {}).get("root_volume"):
        return
    payload = DiskDelete(vm_id=ctx.params["vm_id"])
    await repeatable_task(ctx, ctx.params["host_id"], "undo-disk", payload)


async def _volumes(ctx: Ctx) -> dict[str, Any]:
    """Create the volumes made with the VM on their pools (root volume first; none: nothing
    to do)."""
    vids = ctx.params.get("volumes", [])
    for i, vid in enumerate(vids):
        vol, pool = await load_volume(ctx, vid)
        await ctx.progress(30 + 15 * i // len(vids), f"creating volume {vol.name}")
        task = await volume_create_task(ctx, vol, pool)
        await agent_task(ctx, ctx.params["host_id"], f"volume-{i}", task)
        host_id = ctx.params["host_id"] if pool.type == "local" else None
        await set_volume(ctx, vid, instantiated=True, host_id=host_id)
    return {}


async def _delete_volumes(ctx: Ctx) -> None:
    if await rollback_incomplete(ctx):
        return  # the VM may still be defined with them: ``vm delete`` detaches them
    for i, vid in enumerate(ctx.params.get("volumes", [])):
        try:
            vol, pool = await load_volume(ctx, vid)
        except NotFound:
            continue
        task = VolumeDeleteTask(volume=volume_ref(ctx.deps.secrets, vol, pool))
        await repeatable_task(ctx, ctx.params["host_id"], f"undo-volume-{i}", task)
        await set_volume(ctx, vid, instantiated=False, host_id=None)


async def _define(ctx: Ctx) -> dict[str, Any]:
    vm, _ = await load_vm_and_image(ctx)
    await ctx.progress(50, "defining the VM")
    full = ctx.params.get("volumes") or ctx.params.get("nics")
    spec = await full_spec(ctx, vm) if full else vm_spec(vm)
    await agent_task(ctx, ctx.params["host_id"], "define", VmDefine(spec=spec))
    set_vm_with_journal(ctx, power_state=PowerState.stopped)
    return {}


async def _undefine(ctx: Ctx) -> None:
    payload = VmUndefine(vm_id=ctx.params["vm_id"])
    await repeatable_task(ctx, ctx.params["host_id"], "undo-define", payload)
    await set_vm(ctx, power_state=PowerState.absent)


async def _start(ctx: Ctx) -> dict[str, Any]:
    if not ctx.params.get("start", True):
        return {"started": False}
    await ctx.progress(70, "starting the VM")
    await agent_task(
        ctx, ctx.params["host_id"], "start", VmPower(kind="vm.start", vm_id=ctx.params["vm_id"])
    )
    return {"started": True}


async def _force_stop(ctx: Ctx) -> None:
    vm_id = ctx.params["vm_id"]
    try:
        payload = VmPower(kind="vm.stop", vm_id=vm_id, force=True)
        await repeatable_task(ctx, ctx.params["host_id"], "undo-start", payload)
    except CorralError as err:
        if not vm_absent(err, vm_id):  # not defined: nothing runs
            raise


async def _finalize(ctx: Ctx) -> dict[str, Any]:
    started = ctx.results.get("start", {}).get("started", False)
    if vids := ctx.params.get("volumes"):
        await settle(ctx, *vids)
    set_vm_with_journal(
        ctx,
        status=VmStatus.running if started else VmStatus.stopped,
        power_state=PowerState.running if started else PowerState.stopped,
        error=None,
    )
    return {}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """The row is gone after a complete rollback; if it is still there, the VM is in ``error``."""
    why = f"create failed: {err.message}"
    if incomplete := await rollback_incomplete(ctx):
        why += f" (could not undo: {', '.join(incomplete)}; delete the VM to clean up)"
        await set_vm(ctx, status=VmStatus.error, error=why)
        return
    # past the point of no return (or cancelled while queued): nothing was undone
    power = PowerState.stopped if "define" in ctx.results else PowerState.absent
    if ctx.results.get("start", {}).get("started"):
        power = PowerState.running
    await set_vm(ctx, status=VmStatus.error, power_state=power, error=why)


VM_CREATE = Workflow(
    "vm.create",
    steps=(
        Step("record", _record, _unrecord),
        Step("claim", _claim, _release),
        Step("network", _network, _disconnect),
        Step("disk", _disk, _delete_disk),
        Step("volumes", _volumes, _delete_volumes),
        Step("define", _define, _undefine),
        Step("start", _start, _force_stop),
        Step("finalize", _finalize, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="finalize",
)
