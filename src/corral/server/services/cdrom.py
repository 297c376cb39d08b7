"""A VM's CD-ROM drive (insert an ISO image, eject) and boot order: checks, then a workflow
(``vm.cdrom``, ``vm.boot_order``) on the VM's lock."""

from __future__ import annotations

from typing import Any

from corral.api.cdrom import BootOrder, CdromInsert
from corral.api.errors import InvalidInput, InvalidState
from corral.api.images import ImageStatus
from corral.api.operations import Operation
from corral.api.vms import VmStatus
from corral.server.db.tables import ImageRow, VmRow
from corral.server.identity.access import check_if_match, require
from corral.server.identity.caller import Caller
from corral.server.services.context import Services
from corral.server.services.images import visible_images
from corral.server.services.listing import get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.vms import visible_vms

ISO = "iso"
USABLE = frozenset({VmStatus.stopped, VmStatus.running, VmStatus.paused})
"""The VM states in which the drive and the boot order can change (the VM is defined)."""


async def _vm(svc: Services, ref: str, caller: Caller, verb: str, if_match: str | None) -> VmRow:
    async with svc.sessionmaker() as s:
        vm = await get_row(s, VmRow, ref, "vm", where=visible_vms(caller))
    require(caller, "vm:update", vm.project_id)
    check_if_match(if_match, vm.id, vm.updated_at)
    if VmStatus(vm.status) not in USABLE or vm.host_id is None:
        raise InvalidState(
            f"cannot {verb} VM {vm.name!r}: it is {vm.status}", vm=vm.name, status=vm.status
        )
    return vm


async def _submit(
    svc: Services, vm: VmRow, type: str, params: dict[str, Any], caller: Caller
) -> Operation:
    async with svc.sessionmaker() as s:
        op = svc.runner.create(
            s,
            project_id=vm.project_id,
            user_id=caller.user_id,
            type=type,
            target_type="vm",
            target_id=vm.id,
            lock_key=f"vm:{vm.id}",
            params={"vm_id": vm.id, "host_id": vm.host_id, **params},
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)


async def insert(
    *,
    svc: Services,
    ref: str,
    spec: CdromInsert,
    caller: Caller,
    if_match: str | None = None,
) -> Operation:
    """Put the ISO image ``spec.image`` in the VM's drive (replacing what is there)."""
    vm = await _vm(svc, ref, caller, "change the CD-ROM of", if_match)
    async with svc.sessionmaker() as s:
        img = await get_row(s, ImageRow, spec.image, "image", where=visible_images(caller))
    if img.format != ISO:
        raise InvalidInput(
            f"image {img.name!r} is not an ISO image ({img.format}): only ISO images go in a"
            " CD-ROM drive",
            image=img.name,
            format=img.format,
        )
    if img.status != ImageStatus.ready:
        raise InvalidState(f"image {img.name!r} is {img.status}, not ready", image=img.name)
    params = {"image_id": img.id, "old_image_id": vm.cdrom_image_id}
    return await _submit(svc, vm, "vm.cdrom", params, caller)


async def eject(
    *, svc: Services, ref: str, caller: Caller, if_match: str | None = None
) -> Operation:
    """Empty the VM's drive (an empty drive stays empty: the operation succeeds)."""
    vm = await _vm(svc, ref, caller, "eject the CD-ROM of", if_match)
    params = {"image_id": None, "old_image_id": vm.cdrom_image_id}
    return await _submit(svc, vm, "vm.cdrom", params, caller)


async def set_boot_order(
    *,
    svc: Services,
    ref: str,
    spec: BootOrder,
    caller: Caller,
    if_match: str | None = None,
) -> Operation:
    """Record the boot order and redefine the VM with it: it applies at the VM's next boot."""
    vm = await _vm(svc, ref, caller, "change the boot order of", if_match)
    params = {"boot": list(spec.boot), "old_boot": list(vm.boot_order or ["hd"])}
    return await _submit(svc, vm, "vm.boot_order", params, caller)
