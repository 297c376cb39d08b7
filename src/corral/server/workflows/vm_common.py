"""What VM workflows share: the spec sent to agents, image references, status updates, tasks that
may be retried."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import ImageRef, TaskPayload, VmSpec
from corral.api.errors import CorralError, NotFound
from corral.server.db.tables import ImageRow, VmRow
from corral.server.identity import quotas
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import Ctx


def vm_spec(vm: VmRow) -> VmSpec:
    return VmSpec(
        vm_id=vm.id,
        name=vm.name,
        cpus=vm.cpus,
        memory_mb=vm.memory_mb,
        disk_gb=vm.disk_gb,
        vnc_password=vm.vnc_password,
    )


def image_ref(img: ImageRow) -> ImageRef:
    return ImageRef(
        id=img.id,
        sha256=img.sha256 or "",
        size_bytes=img.size_bytes,
        virtual_size_bytes=img.virtual_size_bytes,
        format=img.format or "qcow2",
        download_path=f"/api/v1/agent/images/{img.id}/data",
    )


async def load_vm(ctx: Ctx, vm_id: str | None = None) -> VmRow:
    vid = vm_id or ctx.params["vm_id"]
    async with ctx.deps.sessionmaker() as s:
        vm: VmRow | None = await s.get(VmRow, vid)
    if vm is None:
        raise NotFound(f"VM {vid} not found", kind="vm", ref=vid)
    return vm


async def load_vm_and_image(ctx: Ctx) -> tuple[VmRow, ImageRow]:
    """The workflow's VM and its image, read once per run (``ctx.memo``): for steps that only need
    what cannot change while the run holds the VM's lock (its spec, its image)."""
    hit = ctx.memo.get("vm_and_image")
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    vid = ctx.params["vm_id"]
    async with ctx.deps.sessionmaker() as s:
        vm: VmRow | None = await s.get(VmRow, vid)
        img = await s.get(ImageRow, vm.image_id) if vm is not None and vm.image_id else None
    if vm is None:
        raise NotFound(f"VM {vid} not found", kind="vm", ref=vid)
    if img is None:
        raise NotFound(f"image of VM {vid} not found", kind="image", ref=vm.image_id)
    ctx.memo["vm_and_image"] = (vm, img)
    return vm, img


async def forget_vm(s: AsyncSession, vm: VmRow) -> None:
    """Delete the VM's row and give its quota usage back (in the caller's transaction)."""
    await quotas.adjust(
        s,
        vm.project_id,
        **{k: -v for k, v in quotas.vm_usage(vm.cpus, vm.memory_mb, vm.disk_gb).items()},
    )
    await s.delete(vm)


def set_vm_with_journal(ctx: Ctx, **values: Any) -> None:
    """``set_vm`` committed with the running step's ``done`` (``Ctx.write_with_journal``)."""
    ctx.write_with_journal(update(VmRow).where(VmRow.id == ctx.params["vm_id"]).values(**values))


async def set_vm(ctx: Ctx, **values: Any) -> None:
    """Update the workflow's VM row (absent rows are ignored: undo paths may run after deletion)."""
    async with ctx.deps.sessionmaker.begin() as s:
        await s.execute(update(VmRow).where(VmRow.id == ctx.params["vm_id"]).values(**values))


async def repeatable_task(
    ctx: Ctx, host_id: str, name: str, payload: TaskPayload
) -> dict[str, Any]:
    """Run an idempotent agent task under a fresh task id (``<op>:<name>.<nonce>``).

    For undo steps and steps past a point of no return, which the engine retries: the agent answers
    a task id it has seen with that task's first status, so retrying under the same id would only
    replay a failure. Only for payloads that are safe to run twice (after a server crash the task
    may run again; the agent runs tasks of one VM one after the other, in order)."""
    return await agent_task(ctx, host_id, f"{name}.{secrets.token_hex(4)}", payload)


def vm_absent(err: CorralError, vm_id: str) -> bool:
    """Whether ``err`` is the agent saying that VM ``vm_id`` is not defined on its host."""
    return isinstance(err, NotFound) and err.context.get("vm_id") == vm_id


async def rollback_incomplete(ctx: Ctx) -> list[str]:
    """Steps of this operation whose undo failed (the rollback so far left something behind)."""
    return [r.name for r in await ctx.engine.journal(ctx.op_id) if r.state == "undo_failed"]
