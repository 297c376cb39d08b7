"""vm.cdrom: put an ISO in a VM's CD-ROM drive or eject it; vm.boot_order: change what it boots.

vm.cdrom params: ``vm_id``, ``host_id``, ``image_id`` (None: eject), ``old_image_id``. The VM's
``cdrom_image_id`` is recorded first (so that the image cannot be deleted meanwhile), then the
agent changes the medium (live if the VM runs). A failure puts the old medium back, in the row
and on the host.

vm.boot_order params: ``vm_id``, ``host_id``, ``boot``, ``old_boot``. The order is recorded and
the VM redefined with it (it applies at the next boot); a failure restores both.
"""

from __future__ import annotations

from typing import Any

from corral.api.agent import ImageRef, VmCdrom, VmDefine
from corral.api.errors import NotFound
from corral.server.db.tables import ImageRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import Ctx, Step, Workflow
from corral.server.workflows.vm_common import (
    full_spec,
    image_ref,
    load_vm,
    repeatable_task,
    set_vm,
)


async def _ref(ctx: Ctx, image_id: str | None) -> ImageRef | None:
    if image_id is None:
        return None
    async with ctx.deps.sessionmaker() as s:
        img = await s.get(ImageRow, image_id)
    if img is None:
        raise NotFound(f"image {image_id} not found", kind="image", ref=image_id)
    return image_ref(img)


async def _insert(ctx: Ctx) -> dict[str, Any]:
    image_id = ctx.params["image_id"]
    await ctx.progress(20, "inserting the disc" if image_id else "ejecting the disc")
    await set_vm(ctx, cdrom_image_id=image_id)
    payload = VmCdrom(vm_id=ctx.params["vm_id"], image=await _ref(ctx, image_id))
    result = await agent_task(ctx, ctx.params["host_id"], "cdrom", payload)
    return {"cdrom": result.get("cdrom")}


async def _put_back(ctx: Ctx) -> None:
    old = ctx.params["old_image_id"]
    payload = VmCdrom(vm_id=ctx.params["vm_id"], image=await _ref(ctx, old))
    await repeatable_task(ctx, ctx.params["host_id"], "undo-cdrom", payload)
    await set_vm(ctx, cdrom_image_id=old)


VM_CDROM = Workflow("vm.cdrom", steps=(Step("insert", _insert, _put_back),))


async def _redefine(ctx: Ctx, boot: list[str], name: str) -> None:
    await set_vm(ctx, boot_order=boot)
    vm = await load_vm(ctx)
    spec = await full_spec(ctx, vm)
    await repeatable_task(ctx, ctx.params["host_id"], name, VmDefine(spec=spec))


async def _set_boot(ctx: Ctx) -> dict[str, Any]:
    await ctx.progress(20, "redefining the VM")
    await _redefine(ctx, ctx.params["boot"], "boot-order")
    return {}


async def _old_boot(ctx: Ctx) -> None:
    await _redefine(ctx, ctx.params["old_boot"], "undo-boot-order")


VM_BOOT_ORDER = Workflow("vm.boot_order", steps=(Step("define", _set_boot, _old_boot),))
