"""VMs: create (place + claim in the request), power actions, resize, delete."""

from __future__ import annotations

import math
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InvalidInput, InvalidState, NameTaken, NoHostAvailable
from corral.api.operations import Operation
from corral.api.vms import PowerState, Vm, VmAction, VmCreate, VmResize, VmStatus, VmStop
from corral.server.db.tables import HostRow, ImageRow, OfferingRow, OperationRow, VmRow
from corral.server.db.types import new_id
from corral.server.identity import quotas
from corral.server.identity.access import check_if_match, creation_project, require, visible
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.images import visible_images
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import Kind, get_row
from corral.server.services.nics import NicPlan, nic_hosts, plan_nics, record_nics
from corral.server.services.operations import to_model as op_model
from corral.server.services.placement import place_and_claim
from corral.server.services.recycle import recycles
from corral.server.services.vm_volumes import (
    PlannedVolumes,
    RootPlan,
    plan_vm_volumes,
    record_vm_volumes,
)
from corral.server.workflows.vm_create import VM_CREATE
from corral.server.workflows.vm_power import check_allowed
from corral.server.workflows.vm_recycle import VM_RECYCLE

GIB = 1024**3
_VMS: Table = VmRow.__table__  # type: ignore[assignment]
_INSERT_VM = insert(_VMS)
_VNC_ALPHABET = string.ascii_letters + string.digits


def vm_model(r: VmRow) -> Vm:
    return Vm(
        id=r.id,
        name=r.name,
        status=VmStatus(r.status),
        power_state=PowerState(r.power_state),
        cpus=r.cpus,
        memory_mb=r.memory_mb,
        disk_gb=r.disk_gb,
        image_id=r.image_id,
        offering_id=r.offering_id,
        host_id=r.host_id,
        error=r.error,
        cdrom_image_id=r.cdrom_image_id,
        boot_order=list(r.boot_order or ["hd"]),
        root_volume_id=r.root_volume_id,
        created_at=r.created_at,
        updated_at=r.updated_at,
        project_id=r.project_id,
        owner_id=r.owner_id,
        shared=r.shared,
    )


VMS = Kind("vm", VmRow, vm_model, specs.VMS, Vm)


def vnc_password() -> str:
    """VNC authentication uses at most 8 characters: make all 8 random."""
    return "".join(secrets.choice(_VNC_ALPHABET) for _ in range(8))


def visible_vms(caller: Caller) -> ColumnElement[bool]:
    """The VMs ``caller`` sees (not those in the recycle bin)."""
    return and_(visible(caller, VmRow, "vm"), VmRow.status != VmStatus.recycled.value)


@dataclass(frozen=True)
class NewVm:
    """A VM to record (``record_vm``): its checked sizes, image and owner."""

    name: str
    project_id: str
    owner_id: str | None
    cpus: int
    memory_mb: int
    disk_gb: int
    image_id: str
    offering_id: str | None
    pinned: str | None
    start: bool


async def record_vm(
    svc: Services,
    s: AsyncSession,
    new: NewVm,
    planned: PlannedVolumes | None = None,
    nics: Sequence[NicPlan] = (),
) -> OperationRow:
    """Charge the quota, place the VM and claim its host, insert its row (``creating``), its
    ``planned`` volumes, its ``nics`` (with their addresses) and its queued ``vm.create``
    operation (journal prefilled) in ``s``. The caller commits (mapping an ``IntegrityError``
    to ``NameTaken``) and launches the operation. ``QuotaExceeded``, ``NoHostAvailable``,
    IPAM refusals (``InUse``, ``Conflict``); the caller rolls ``s`` back on those."""
    values: dict[str, Any] = {
        "id": new_id(),
        "project_id": new.project_id,
        "owner_id": new.owner_id,
        "name": new.name,
        "status": VmStatus.creating.value,
        "power_state": PowerState.absent.value,
        "cpus": new.cpus,
        "memory_mb": new.memory_mb,
        "disk_gb": new.disk_gb,
        "image_id": new.image_id,
        "offering_id": new.offering_id,
        "vnc_password": vnc_password(),
        "root_volume_id": root.id if planned is not None and (root := planned.root) else None,
    }
    vm = VmRow(**values)  # transient: written below with one Core INSERT
    await quotas.adjust(s, new.project_id, **quotas.vm_usage(new.cpus, new.memory_mb, new.disk_gb))
    storage_hosts = planned.hosts if planned is not None else None
    net_hosts = await nic_hosts(s, nics)
    if net_hosts is not None:
        storage_hosts = net_hosts if storage_hosts is None else storage_hosts & net_hosts
        if not storage_hosts:
            raise NoHostAvailable(
                "no host reaches both the VM's storage pools and its port groups' switches"
            )
    host_id = await place_and_claim(s, vm, new.pinned, storage_hosts)
    values.update(host_id=host_id, claimed=True)
    await s.execute(_INSERT_VM, values)
    volume_ids = (
        await record_vm_volumes(s, planned, vm_id=vm.id, owner_id=new.owner_id)
        if planned is not None
        else []
    )
    nic_ids = await record_nics(s, vm.id, nics)
    op = await svc.runner.insert(
        s,
        type=VM_CREATE.type,
        target_type="vm",
        target_id=vm.id,
        lock_key=f"vm:{vm.id}",
        params={
            "vm_id": vm.id,
            "host_id": host_id,
            "start": new.start,
            **({"volumes": volume_ids} if volume_ids else {}),
            **({"nics": nic_ids} if nic_ids else {}),
        },
        project_id=new.project_id,
        user_id=new.owner_id,
    )
    await svc.engine.prejournal(s, op.id, VM_CREATE, {"record": {}, "claim": {"host_id": host_id}})
    return op


def host_bound(image: ImageRow) -> str:
    """What a host-bound image is, in words."""
    if image.parent_id is not None:
        return "a linked-clone layer"
    return "a clone's base not published to the image store yet"


def layer_host(image: ImageRow, pinned: str | None) -> str | None:
    """Where a VM made from ``image`` must run: the host of a host-bound image (a linked-clone
    layer, or a clone's base not published yet; ``InvalidInput`` if ``pinned`` names another),
    else ``pinned``."""
    if image.host_id is None:
        return pinned
    if pinned is not None and pinned != image.host_id:
        raise InvalidInput(
            f"image {image.name!r} is kept on one host only ({host_bound(image)}): VMs made"
            " from it run there",
            image=image.name,
            host_id=image.host_id,
        )
    return image.host_id


async def create_vm(*, svc: Services, spec: VmCreate, caller: Caller) -> Operation:
    """Validate, record the VM, place it and claim its resources in one transaction; the rest
    (disk, define, start) runs as the ``vm.create`` workflow. Nothing is created on a 4xx. The VM
    goes to the caller's project (``access.creation_project``) and belongs to the caller.

    The quota, the claim and the VM, operation and journal rows are written with Core statements
    in the session's transaction (no ORM unit of work: this is the create path's hot spot): the
    claim first, so that the VM row is inserted with its host, in one statement."""
    project_id = creation_project(caller, "vm:create")
    async with svc.sessionmaker() as s:
        image = await get_row(s, ImageRow, spec.image, "image", where=visible_images(caller))
        if image.status != "ready":
            raise InvalidState(
                f"image {image.name!r} is {image.status}, not ready", image=image.name
            )
        if image.format == "iso":
            raise InvalidInput(
                "an ISO image boots from the CD-ROM: create the VM from a disk image, then"
                " insert the ISO (POST /vms/{ref}/cdrom) and set the boot order",
                image=image.name,
            )
        offering = (
            await get_row(s, OfferingRow, spec.offering, "offering") if spec.offering else None
        )
        cpus = spec.cpus or (offering.cpus if offering else 1)
        memory_mb = spec.memory_mb or (offering.memory_mb if offering else 0)
        min_disk = max(1, math.ceil(image.virtual_size_bytes / GIB))
        disk_gb = spec.disk_gb or (offering.disk_gb if offering else min_disk)
        if disk_gb < min_disk:
            raise InvalidInput(
                f"disk {disk_gb} GiB is smaller than image {image.name!r} ({min_disk} GiB)",
                disk_gb=disk_gb,
                image_gb=min_disk,
            )
        pinned = (await get_row(s, HostRow, spec.host, "host")).id if spec.host else None
        pinned = layer_host(image, pinned)
        await ensure_name_free(s, VmRow, spec.name, "VM", project_id=project_id)
        new = NewVm(
            name=spec.name,
            project_id=project_id,
            owner_id=caller.user_id,
            cpus=cpus,
            memory_mb=memory_mb,
            disk_gb=disk_gb,
            image_id=image.id,
            offering_id=offering.id if offering else None,
            pinned=pinned,
            start=spec.start,
        )
        root = RootPlan(spec.root_pool, image.id, disk_gb) if spec.root_pool else None
        planned = (
            await plan_vm_volumes(s, spec, project_id, caller, root)
            if spec.volumes or root
            else None
        )
        nics = await plan_nics(s, spec.nics, caller, project_id) if spec.nics else []
        try:
            op = await record_vm(svc, s, new, planned, nics)
            await s.commit()
        except IntegrityError as exc:
            raise NameTaken(f"a VM named {spec.name!r} exists already", name=spec.name) from exc
    svc.runner.launch(op)
    return op_model(op)


async def _submit(
    svc: Services, ref: str, type: str, params: dict[str, Any], caller: Caller
) -> tuple[Operation, VmRow]:
    async with svc.sessionmaker() as s:
        vm = await get_row(s, VmRow, ref, "vm")
        op = svc.runner.create(
            s,
            project_id=vm.project_id,
            user_id=caller.user_id,
            type=type,
            target_type="vm",
            target_id=vm.id,
            lock_key=f"vm:{vm.id}",
            params={
                "vm_id": vm.id,
                "host_id": vm.host_id,
                "previous_status": vm.status,
                "previous_power": vm.power_state,
                **params,
            },
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op), vm


async def _visible_vm(
    svc: Services, ref: str, caller: Caller, permission: str, if_match: str | None = None
) -> VmRow:
    """The VM ``ref`` if the caller sees it (else ``NotFound``), may ``permission`` it (else
    ``Forbidden``) and ``if_match`` names its current version (else ``PreconditionFailed``)."""
    async with svc.sessionmaker() as s:
        vm = await get_row(s, VmRow, ref, "vm", where=visible_vms(caller))
    require(caller, permission, vm.project_id)
    check_if_match(if_match, vm.id, vm.updated_at)
    return vm


async def _check(
    svc: Services,
    ref: str,
    allowed: set[VmStatus],
    verb: str,
    caller: Caller,
    permission: str,
    if_match: str | None = None,
) -> VmRow:
    vm = await _visible_vm(svc, ref, caller, permission, if_match)
    if VmStatus(vm.status) not in allowed:
        need = ", ".join(sorted(a.value for a in allowed))
        raise InvalidState(
            f"cannot {verb} VM {vm.name!r}: it is {vm.status} (needs {need})",
            vm=vm.name,
            status=vm.status,
        )
    return vm


async def act(
    *,
    svc: Services,
    ref: str,
    action: VmAction,
    caller: Caller,
    stop: VmStop | None = None,
    if_match: str | None = None,
) -> Operation:
    vm = await _visible_vm(svc, ref, caller, "vm:power", if_match)
    check_allowed(vm, action)
    params: dict[str, Any] = {}
    if stop is not None:
        params = {"force": stop.force, "timeout": stop.timeout}
    op, _ = await _submit(svc, vm.id, f"vm.{action.value}", params, caller)
    return op


async def resize(
    *, svc: Services, ref: str, spec: VmResize, caller: Caller, if_match: str | None = None
) -> Operation:
    vm = await _check(
        svc, ref, {VmStatus.stopped}, "resize (stop it first)", caller, "vm:update", if_match
    )
    cpus = spec.cpus or vm.cpus
    memory_mb = spec.memory_mb or vm.memory_mb
    if (cpus, memory_mb) == (vm.cpus, vm.memory_mb):
        raise InvalidInput("the VM has this size already", cpus=cpus, memory_mb=memory_mb)
    params = {
        "cpus": cpus,
        "memory_mb": memory_mb,
        "old_cpus": vm.cpus,
        "old_memory_mb": vm.memory_mb,
    }
    op, _ = await _submit(svc, vm.id, "vm.resize", params, caller)
    return op


RECYCLABLE = frozenset({VmStatus.stopped, VmStatus.running, VmStatus.paused})
"""VMs a delete may put in the recycle bin (others, e.g. in ``error``, are deleted at once)."""


async def delete(
    *,
    svc: Services,
    ref: str,
    caller: Caller,
    if_match: str | None = None,
    expunge: bool = False,
) -> Operation:
    """Delete the VM: to the recycle bin (``vm.recycle``) under the ``delayed`` and ``never``
    policies when it is stopped, running or paused, else (``expunge``, the ``immediate``
    policy, a VM in ``error``…) at once (``vm.delete``)."""
    allowed = set(VmStatus) - {VmStatus.creating, VmStatus.deleting, VmStatus.recycled}
    vm = await _check(svc, ref, allowed, "delete", caller, "vm:delete", if_match)
    async with svc.sessionmaker() as s:
        to_bin = VmStatus(vm.status) in RECYCLABLE and await recycles(svc, s, "vm", expunge)
    if to_bin:
        op, _ = await _submit(svc, vm.id, VM_RECYCLE.type, {"user_id": caller.user_id}, caller)
        return op
    op, _ = await _submit(svc, vm.id, "vm.delete", {}, caller)
    return op


async def expunge_vm(
    svc: Services, s: AsyncSession, vm: VmRow, user_id: str | None
) -> OperationRow:
    """The ``vm.delete`` of a VM leaving the bin (added to ``s``; the caller commits and
    launches it). The VM is ``stopped`` again meanwhile: a failed delete leaves it in the VM
    list (``error``), to be deleted again."""
    vm.status = VmStatus.stopped.value
    return svc.runner.create(
        s,
        project_id=vm.project_id,
        user_id=user_id,
        type="vm.delete",
        target_type="vm",
        target_id=vm.id,
        lock_key=f"vm:{vm.id}",
        params={
            "vm_id": vm.id,
            "host_id": vm.host_id,
            "previous_status": VmStatus.stopped.value,
            "previous_power": vm.power_state,
        },
    )
