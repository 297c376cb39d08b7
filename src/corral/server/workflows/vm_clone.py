"""vm.clone (full): capture the source's root disk once, then create every clone from it.

Steps:
- ``capture`` (undo: ``drop_image``): the stopped source's root disk becomes an image
  (``image.capture``'s step; the source host keeps the copy in its image cache, so clones
  placed there fetch nothing). Its undo deletes the image unless a VM was made from it.
- ``launch``: one transaction records every clone (quota, placement, claim, row, its own
  queued ``vm.create`` operation) as ``POST /vms`` does; if one cannot be placed, none is
  recorded and the capture is undone. Then the operations start. No undo of its own: once the
  clones exist, the image is theirs (``drop_image`` refuses while they use it).
- ``wait`` (point of no return): wait for every clone's ``vm.create``; each rolls back on its
  own when it fails, and the clone operation then fails naming them, keeping the clones that
  were made and their image.
"""

from __future__ import annotations

from typing import Any

from corral.api.errors import CorralError, NameTaken, Timeout
from corral.api.operations import OperationStatus
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.image_capture import capture, drop_image

WAIT_S = 3600.0
"""How long the clone operation waits for its clones' creation in all."""


async def _launch(ctx: Ctx) -> dict[str, Any]:
    from sqlalchemy.exc import IntegrityError

    from corral.server.services.vms import NewVm, record_vm

    p = ctx.params
    svc = ctx.deps
    await ctx.progress(60, f"creating {len(p['names'])} clone(s)")
    ops = []
    async with svc.sessionmaker() as s:
        try:
            for name in p["names"]:
                new = NewVm(
                    name=name,
                    project_id=p["project_id"],
                    owner_id=p["owner_id"],
                    cpus=p["cpus"],
                    memory_mb=p["memory_mb"],
                    disk_gb=p["disk_gb"],
                    image_id=p["image_id"],
                    offering_id=p["offering_id"],
                    pinned=p["pinned"],
                    start=p["start"],
                )
                ops.append(await record_vm(svc, s, new))
            await s.commit()
        except IntegrityError as exc:
            raise NameTaken(
                "a VM with one of the clones' names exists already", names=p["names"]
            ) from exc
    for op in ops:
        svc.runner.launch(op)
    return {"vms": [op.target_id for op in ops], "operations": [op.id for op in ops]}


async def _wait(ctx: Ctx) -> dict[str, Any]:
    launched = ctx.results["launch"]
    loop_deadline = WAIT_S
    failed: list[str] = []
    total = len(launched["operations"])
    for i, op_id in enumerate(launched["operations"]):
        op = await ctx.deps.runner.wait(op_id, timeout=loop_deadline)
        if not op.status.done:
            raise Timeout("the clones are still being created", operations=launched["operations"])
        if op.status != OperationStatus.succeeded:
            failed.append(launched["vms"][i])
        await ctx.progress(60 + 40 * (i + 1) // total, f"{i + 1} of {total} clone(s) done")
    if failed:
        raise CorralError(
            f"{len(failed)} of {total} clone(s) could not be created (see their vm.create"
            " operations)",
            failed_vms=failed,
            vms=launched["vms"],
        )
    return {"vms": launched["vms"], "image_id": ctx.params["image_id"]}


VM_CLONE = Workflow(
    "vm.clone",
    steps=(
        Step("capture", capture, drop_image),
        Step("launch", _launch, NO_UNDO),
        Step("wait", _wait, NO_UNDO),
    ),
    forward_from="wait",
)
