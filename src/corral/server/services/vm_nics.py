"""Use cases of ``/vms/{ref}/nics``: list, show, hot-plug (``vm.nic.add``), change the
policy, unplug (``vm.nic.remove``).

A NIC is added or removed while its VM is running, stopped or paused (on a host). A policy
change (security groups, default policies, spoofing protection, allowed pairs) is recorded by
the request and reaches the hosts concerned in the background at once (``net_sync``): the
operation is finished when it returns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InvalidState, NotFound
from corral.api.nics import MAX_NICS, Nic, NicCreate, NicUpdate
from corral.api.operations import Operation
from corral.api.vms import VmStatus
from corral.server.db.tables import NicRow, VmRow
from corral.server.db.types import utcnow
from corral.server.identity.access import require
from corral.server.identity.caller import Caller
from corral.server.services import net_sync
from corral.server.services.context import Services
from corral.server.services.listing import get_row
from corral.server.services.nics import (
    nic_groups,
    nic_hosts,
    nic_models,
    plan_nics,
    record_nics,
    resolve_groups,
    set_groups,
)
from corral.server.services.operations import to_model as op_model
from corral.server.services.vms import visible_vms
from corral.server.workflows.vm_nic import VM_NIC_ADD, VM_NIC_REMOVE

PLUGGABLE = {VmStatus.running, VmStatus.stopped, VmStatus.paused}
"""VM states in which NICs may be added or removed."""


async def _vm(s: AsyncSession, ref: str, caller: Caller, permission: str | None) -> VmRow:
    vm = await get_row(s, VmRow, ref, "vm", where=visible_vms(caller))
    if permission is not None:
        require(caller, permission, vm.project_id)
    return vm


async def _nic(s: AsyncSession, vm: VmRow, ref: str) -> NicRow:
    """The VM's NIC by id, MAC or device number."""
    cond = (NicRow.id == ref) | (NicRow.mac == ref.lower())
    if ref.isdigit():
        cond = cond | (NicRow.position == int(ref))
    row = await s.scalar(select(NicRow).where(NicRow.vm_id == vm.id, cond))
    if row is None:
        raise NotFound(f"VM {vm.name!r} has no NIC {ref!r}", kind="nic", ref=ref)
    return row


def _pluggable(vm: VmRow, verb: str) -> None:
    if VmStatus(vm.status) not in PLUGGABLE or vm.host_id is None:
        raise InvalidState(
            f"cannot {verb} a NIC of VM {vm.name!r}: it is {vm.status}",
            vm=vm.name,
            status=vm.status,
        )


async def list_nics(*, svc: Services, ref: str, caller: Caller) -> list[Nic]:
    async with svc.sessionmaker() as s:
        vm = await _vm(s, ref, caller, None)
        return await nic_models(s, vm.id)


async def get_nic(*, svc: Services, ref: str, nic: str, caller: Caller) -> Nic:
    async with svc.sessionmaker() as s:
        vm = await _vm(s, ref, caller, None)
        row = await _nic(s, vm, nic)
        return (await nic_models(s, vm.id, [row.id]))[0]


def _queue(
    svc: Services,
    s: AsyncSession,
    type: str,
    vm: VmRow,
    caller: Caller,
    nic_id: str,
    **params: Any,
) -> Any:
    """The NIC's operation (its target: the NIC), serialized with the VM's others."""
    return svc.runner.create(
        s,
        type=type,
        target_type="nic",
        target_id=nic_id,
        lock_key=f"vm:{vm.id}",
        project_id=vm.project_id,
        user_id=caller.user_id,
        params={"vm_id": vm.id, "host_id": vm.host_id, "nic_id": nic_id, **params},
    )


async def add_nic(*, svc: Services, ref: str, spec: NicCreate, caller: Caller) -> Operation:
    """Record the NIC (next device number) with its addresses and queue ``vm.nic.add``.
    ``InvalidState`` unless the VM is running, stopped or paused on a host, or has
    ``MAX_NICS``; ``InvalidState`` if its host does not carry the port group's switch; the
    IPAM and plan refusals of ``plan_nics`` / ``record_nics``. Nothing is recorded on those."""
    async with svc.sessionmaker() as s:
        vm = await _vm(s, ref, caller, "vm:update")
        _pluggable(vm, "add")
        count = (
            await s.scalar(select(func.count()).select_from(NicRow).where(NicRow.vm_id == vm.id))
            or 0
        )
        if count >= MAX_NICS:
            raise InvalidState(f"VM {vm.name!r} has {count} NICs, the most it may have")
        plans = await plan_nics(s, [spec], caller, vm.project_id)
        hosts = await nic_hosts(s, plans)
        if hosts is not None and vm.host_id not in hosts:
            raise InvalidState(
                f"the host of VM {vm.name!r} does not carry port group "
                f"{plans[0].port_group.name!r} (its switch is not attached to the host's "
                "cluster)",
                reason="port_group_unreachable",
            )
        last = await s.scalar(select(func.max(NicRow.position)).where(NicRow.vm_id == vm.id))
        first = 0 if last is None else last + 1
        (nic_id,) = await record_nics(s, vm.id, plans, first_position=first)
        op = _queue(svc, s, VM_NIC_ADD.type, vm, caller, nic_id=nic_id)
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def remove_nic(
    *, svc: Services, ref: str, nic: str, caller: Caller, timeout: float = 30.0
) -> Operation:
    """Queue ``vm.nic.remove``: unplug, then forget the NIC and return its addresses."""
    async with svc.sessionmaker() as s:
        vm = await _vm(s, ref, caller, "vm:update")
        _pluggable(vm, "remove")
        row = await _nic(s, vm, nic)
        op = _queue(svc, s, VM_NIC_REMOVE.type, vm, caller, nic_id=row.id, timeout=timeout)
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def update_nic(
    *, svc: Services, ref: str, nic: str, spec: NicUpdate, caller: Caller
) -> Operation:
    """Change the NIC's policy (fields given) and push it to the hosts concerned."""
    async with svc.sessionmaker() as s:
        vm = await _vm(s, ref, caller, "vm:update")
        row = await _nic(s, vm, nic)
        values: dict[str, Any] = {"updated_at": utcnow()}
        for field in ("ingress_default", "egress_default", "spoof_check"):
            if (value := getattr(spec, field)) is not None:
                values[field] = value
        if spec.allowed_pairs is not None:
            values["allowed_pairs"] = [[p.mac, p.cidr] for p in spec.allowed_pairs]
        await s.execute(update(NicRow).where(NicRow.id == row.id).values(**values))
        old_groups = set((await nic_groups(s, [row.id]))[row.id])
        if spec.security_groups is not None:
            ids = await resolve_groups(s, spec.security_groups, caller, vm.project_id)
            await set_groups(s, row.id, ids)
            changed_groups = old_groups ^ set(ids)
        else:
            changed_groups = set()
        op = svc.runner.create(
            s,
            type="vm.nic.update",
            target_type="nic",
            target_id=row.id,
            project_id=vm.project_id,
            user_id=caller.user_id,
            done=True,
        )
        await s.commit()
    hosts = await net_sync.neighbours(svc, vm.id, None)
    if vm.host_id:
        hosts.add(vm.host_id)
    net_sync.hosts_changed(svc, hosts)
    if changed_groups:
        net_sync.groups_changed(svc, changed_groups)
    return op_model(op)
