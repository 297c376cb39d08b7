"""vm.nic.add and vm.nic.remove: hot-plug and unplug a VM's NIC.

``vm.nic.add`` (params ``vm_id``, ``host_id``, ``nic_id``; the NIC row and its addresses are
recorded by the request): ``network`` (the host gets the NIC's segment, DHCP entry and flows),
``plug`` (the agent adds the interface to the VM's definition and hot-plugs it if the VM runs).
A failure unplugs it, forgets the NIC (its addresses go back) and takes it off the host: nothing
stays.

``vm.nic.remove`` (params ``vm_id``, ``host_id``, ``nic_id``, ``timeout``): ``unplug`` (the
guest releases it; undone by plugging it back), then ``forget`` — the point of no return — drops
the NIC and its addresses and takes it off the hosts.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import NicAttachTask, NicDetachTask
from corral.server.netplan.controller import nic_specs
from corral.server.services import net_sync
from corral.server.services.nics import forget_nics
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.vm_common import repeatable_task


async def _spec_task(ctx: Ctx) -> NicAttachTask:
    async with ctx.deps.sessionmaker() as s:
        specs = await nic_specs(s, ctx.params["vm_id"], ctx.params["host_id"])
        await s.commit()
    spec = next(n for n in specs if n.nic_id == ctx.params["nic_id"])
    return NicAttachTask(vm_id=ctx.params["vm_id"], nic=spec)


async def _network(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(20, "connecting the NIC")
    await net_sync.connect(ctx.deps, ctx.params["vm_id"], ctx.params["host_id"])
    return {}


async def _forget(ctx: Ctx) -> None:
    """Drop the NIC (addresses, groups, zone) and take it off its host and the others."""
    await net_sync.disconnect(
        ctx.deps, ctx.params["vm_id"], ctx.params["host_id"], [ctx.params["nic_id"]]
    )


async def _plug(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(60, "plugging the NIC into the VM")
    await agent_task(ctx, ctx.params["host_id"], "plug", await _spec_task(ctx))
    return {}


async def _unplug(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(30, "waiting for the guest to release the NIC")
    payload = NicDetachTask(
        vm_id=ctx.params["vm_id"],
        nic_id=ctx.params["nic_id"],
        timeout=ctx.params.get("timeout", 30.0),
    )
    await agent_task(ctx, ctx.params["host_id"], "unplug", payload)
    return {}


async def _undo_plug(ctx: Ctx) -> None:
    payload = NicDetachTask(vm_id=ctx.params["vm_id"], nic_id=ctx.params["nic_id"])
    await repeatable_task(ctx, ctx.params["host_id"], "undo-plug", payload)


async def _replug(ctx: Ctx) -> None:
    await repeatable_task(ctx, ctx.params["host_id"], "undo-unplug", await _spec_task(ctx))


async def _forget_step(ctx: Ctx) -> dict[str, Any]:
    await _forget(ctx)
    return {}


async def _record(ctx: Ctx) -> dict[str, Any]:
    return {}  # done by the request: the NIC row and its addresses


async def _unrecord(ctx: Ctx) -> None:
    async with ctx.deps.sessionmaker.begin() as s:
        await forget_nics(s, ctx.params["vm_id"], [ctx.params["nic_id"]])


VM_NIC_ADD = Workflow(
    "vm.nic.add",
    steps=(
        Step("record", _record, _unrecord),
        Step("network", _network, _forget),
        Step("plug", _plug, _undo_plug),
    ),
)

VM_NIC_REMOVE = Workflow(
    "vm.nic.remove",
    steps=(
        Step("unplug", _unplug, _replug),
        Step("forget", _forget_step, NO_UNDO),
    ),
    forward_from="forget",
)
