"""vm.clone: one base made from the stopped source's root disk, then every clone created on it.

Params: ``mode`` (full, linked, instant), ``image_id`` (the base's row, recorded ``importing``
by the request), ``vm_id``/``host_id`` (the source), the clones' ``names`` and shape,
``pinned`` (a host for full clones), ``publish_later`` (full clones not pinned elsewhere than
the source's host, without a root pool: decided by the request).

Steps:
- ``base``: ``full`` captures the disk into an image (``image.capture``'s step; the source
  host keeps the copy in its image cache): with ``publish_later`` into that cache only (the
  image ``ready`` but bound to the source's host, ``host_id`` set, ``parent_id`` None), else
  into the image store too — undo: ``drop_image``. ``linked``
  and ``instant`` freeze it in constant time (``disk.freeze``): the disk becomes a read-only
  layer in the source host's image cache (the image row, ``host_id`` set, ``parent_id`` the
  source's image) and the source goes on in a new empty overlay of it (its ``image_id`` is the
  layer from then on) — undo: ``disk.thaw``, the source back on its image, the row deleted.
- ``launch``: one transaction records every clone (quota, placement — on the layer's host for
  linked and instant clones, on the source's host with ``publish_later`` —, claim, row, its
  own queued ``vm.create``) as ``POST /vms`` does; if one cannot be placed, none is, and the
  base is undone. With ``publish_later`` and no ``pinned`` host, clones that do not all fit on
  the source's host are placed anywhere once the base is published (an ``image.publish``
  operation, waited for). No undo of its own: once clones exist, the base is theirs
  (``drop_image`` refuses while VMs use it).
- ``wait`` (point of no return): each clone's ``vm.create``; each rolls back on its own when
  it fails, and the clone operation then fails naming them, keeping the clones that were made.
- ``flatten`` (``instant`` only): each clone's disk gets the layer's data copied in (a live
  block pull while it runs) and is then made from no image: it depends on nothing.
- ``publish`` (``publish_later`` only): queues ``image.publish`` of the base (still bound to
  its host) and does not wait for it: the upload is off the clones' critical path. A clone
  operation that fails once its clones exist (so keeps its base) queues it too
  (``on_failure``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from corral.api.agent import DiskFlatten, DiskFreeze, DiskThaw
from corral.api.errors import CorralError, NameTaken, NoHostAvailable, NotFound, Timeout
from corral.api.images import ImageStatus
from corral.api.operations import OperationStatus
from corral.server.db.tables import ImageRow, OperationRow, VmRow
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import NO_UNDO, Ctx, Step, Workflow
from corral.server.workflows.image_capture import capture, drop_image
from corral.server.workflows.vm_common import image_ref, repeatable_task

WAIT_S = 3600.0
"""How long the clone operation waits for its clones' creation in all."""


async def _layer(ctx: Ctx) -> ImageRow:
    async with ctx.deps.sessionmaker() as s:
        row: ImageRow | None = await s.get(ImageRow, ctx.params["image_id"])
    if row is None:
        raise NotFound("the clones' base image is gone", image_id=ctx.params["image_id"])
    return row


async def _base(ctx: Ctx) -> dict[str, Any]:
    if ctx.params["mode"] == "full":
        return await capture(ctx)
    layer = await _layer(ctx)
    await ctx.progress(20, "freezing the source's disk")
    task = DiskFreeze(vm_id=ctx.params["vm_id"], layer=image_ref(layer))
    await agent_task(ctx, ctx.params["host_id"], "freeze", task)
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(ImageRow).where(ImageRow.id == layer.id).values(status=ImageStatus.ready)
        )
        await s.execute(
            update(VmRow).where(VmRow.id == ctx.params["vm_id"]).values(image_id=layer.id)
        )
    return {}


async def _unbase(ctx: Ctx) -> None:
    if ctx.params["mode"] == "full":
        await drop_image(ctx)
        return
    try:
        layer = await _layer(ctx)
    except NotFound:
        return
    task = DiskThaw(vm_id=ctx.params["vm_id"], layer=image_ref(layer))
    await repeatable_task(ctx, ctx.params["host_id"], "undo-freeze", task)
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(
            update(VmRow)
            .where(VmRow.id == ctx.params["vm_id"], VmRow.image_id == layer.id)
            .values(image_id=layer.parent_id)
        )
    await drop_image(ctx)


async def _launch(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    later = bool(p.get("publish_later"))
    pinned = p["pinned"] if p["mode"] == "full" and not later else p["host_id"]
    await ctx.progress(60, f"creating {len(p['names'])} clone(s)")
    try:
        ops = await _record_clones(ctx, pinned)
    except NoHostAvailable:
        if not later or p["pinned"] is not None:
            raise
        await _publish_first(ctx)
        ops = await _record_clones(ctx, None)
    for op in ops:
        ctx.deps.runner.launch(op)
    return {"vms": [op.target_id for op in ops], "operations": [op.id for op in ops]}


async def _publish_first(ctx: Ctx) -> None:
    """The clones do not all fit on the source's host: publish their base now (an
    ``image.publish`` operation, waited for), so that they can go to any host. Raises the
    publication's error (the base is then undone with the rest)."""
    await ctx.progress(
        55, "the clones do not all fit on the source's host: publishing their base first"
    )
    op_id = await queue_publish(ctx)
    if op_id is None:
        return
    op = await ctx.deps.runner.wait(op_id, timeout=WAIT_S)
    if op.status == OperationStatus.succeeded:
        return
    if op.error is None:
        raise Timeout("the clones' base is still being published", operation=op_id)
    raise CorralError.from_body(op.error)


async def queue_publish(ctx: Ctx) -> str | None:
    """Queue and launch ``image.publish`` of the clones' base if it is still bound to its host
    (a full clone's standalone base) and no publication of it is queued or running; returns
    that operation's id (None: nothing to publish)."""
    from corral.server.services.images import publish_operation
    from corral.server.workflows.image_publish import new_publish

    async with ctx.deps.sessionmaker() as s:
        row = await s.get(ImageRow, ctx.params["image_id"])
        if row is None or row.host_id is None or row.parent_id is not None:
            return None
        if running := await publish_operation(s, row.id):
            return running
        op = new_publish(ctx.deps.runner, s, row, ctx.params["owner_id"])
        await s.commit()
    ctx.deps.runner.launch(op)
    return op.id


async def _record_clones(ctx: Ctx, pinned: str | None) -> list[OperationRow]:
    """Record every clone in one transaction, placed on ``pinned`` (None: any host); their
    ``vm.create`` operations are queued, not launched. ``NameTaken``; ``QuotaExceeded`` or
    ``NoHostAvailable`` and nothing is recorded."""
    from sqlalchemy.exc import IntegrityError

    from corral.api.vms import VmCreate
    from corral.server.services.nics import clone_plans
    from corral.server.services.vm_volumes import RootPlan, plan_vm_volumes
    from corral.server.services.vms import NewVm, record_vm

    p = ctx.params
    svc = ctx.deps
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
                    pinned=pinned,
                    start=p["start"],
                )
                planned = None
                if pool := p.get("root_pool"):
                    spec = VmCreate(
                        name=name, image=p["image_id"], cpus=p["cpus"], memory_mb=p["memory_mb"]
                    )
                    root = RootPlan(pool, p["image_id"], p["disk_gb"])
                    planned = await plan_vm_volumes(s, spec, p["project_id"], None, root)
                nics = await clone_plans(s, p["vm_id"])
                ops.append(await record_vm(svc, s, new, planned, nics))
            await s.commit()
        except IntegrityError as exc:
            raise NameTaken(
                "a VM with one of the clones' names exists already", names=p["names"]
            ) from exc
    return ops


async def _wait(ctx: Ctx) -> dict[str, Any]:
    launched = ctx.results["launch"]
    failed: list[str] = []
    total = len(launched["operations"])
    last = 80 if ctx.params["mode"] == "instant" else 100
    for i, op_id in enumerate(launched["operations"]):
        op = await ctx.deps.runner.wait(op_id, timeout=WAIT_S)
        if not op.status.done:
            raise Timeout("the clones are still being created", operations=launched["operations"])
        if op.status != OperationStatus.succeeded:
            failed.append(launched["vms"][i])
        await ctx.progress(60 + (last - 60) * (i + 1) // total, f"{i + 1} of {total} created")
    if failed:
        raise CorralError(
            f"{len(failed)} of {total} clone(s) could not be created (see their vm.create"
            " operations)",
            failed_vms=failed,
            vms=launched["vms"],
        )
    return {"vms": launched["vms"], "image_id": ctx.params["image_id"]}


async def _flatten(ctx: Ctx) -> dict[str, Any]:
    if ctx.params["mode"] != "instant":
        return {}
    vms = ctx.results["wait"]["vms"]
    for i, vm_id in enumerate(vms):
        await ctx.progress(
            80 + 20 * i // len(vms), f"making clone {i + 1} of {len(vms)} independent"
        )
        await agent_task(ctx, ctx.params["host_id"], f"flatten-{i}", DiskFlatten(vm_id=vm_id))
        async with ctx.deps.sessionmaker.begin() as s:
            await s.execute(update(VmRow).where(VmRow.id == vm_id).values(image_id=None))
    return {}


async def _publish(ctx: Ctx) -> dict[str, Any]:
    if not ctx.params.get("publish_later"):
        return {}
    return {"publish_operation": await queue_publish(ctx)}


async def _on_failure(ctx: Ctx, err: CorralError) -> None:
    """A failed clone operation that kept its base (clones exist) still publishes it."""
    if ctx.params.get("publish_later"):
        await queue_publish(ctx)


VM_CLONE = Workflow(
    "vm.clone",
    steps=(
        Step("base", _base, _unbase),
        Step("launch", _launch, NO_UNDO),
        Step("wait", _wait, NO_UNDO),
        Step("flatten", _flatten, NO_UNDO),
        Step("publish", _publish, NO_UNDO),
    ),
    on_failure=_on_failure,
    forward_from="wait",
)
