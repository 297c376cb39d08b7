"""What VM workflows share: the spec sent to agents, image references, status updates, tasks that
may be retried."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import ImageRef, TaskPayload, VmSpec
from corral.api.errors import CorralError, NotFound
from corral.server.db.tables import ImageRow, SnapshotRow, VmRow, VmSnapshotRow
from corral.server.identity import quotas
from corral.server.netplan.configdrive import config_drive
from corral.server.netplan.controller import nic_specs
from corral.server.services.nics import forget_nics
from corral.server.workflows.common import agent_task
from corral.server.workflows.engine import Ctx
from corral.server.workflows.volume_common import release_vm_volumes, vm_disks

_VMS: Table = VmRow.__table__  # type: ignore[assignment]
_IMAGES: Table = ImageRow.__table__  # type: ignore[assignment]
_VM_AND_IMAGE = (
    select(_VMS, _IMAGES)
    .select_from(_VMS.outerjoin(_IMAGES, _IMAGES.c.id == _VMS.c.image_id))
    .where(_VMS.c.id == bindparam("b_vm"))
)


def vm_spec(vm: VmRow) -> VmSpec:
    return VmSpec(
        vm_id=vm.id,
        name=vm.name,
        cpus=vm.cpus,
        memory_mb=vm.memory_mb,
        disk_gb=vm.disk_gb,
        vnc_password=vm.vnc_password,
        boot=vm.boot_order or ["hd"],
    )


async def full_spec(ctx: Ctx, vm: VmRow) -> VmSpec:
    """``vm_spec`` with the VM's attached data volumes, the ISO in its CD-ROM drive, its NICs
    on its host and their config drive (what a redefinition must keep)."""
    update: dict[str, Any] = {"disks": await vm_disks(ctx, vm.id)}
    async with ctx.deps.sessionmaker() as s:
        if vm.cdrom_image_id is not None:
            img = await s.get(ImageRow, vm.cdrom_image_id)
            if img is not None:
                update["cdrom"] = image_ref(img)
        if vm.host_id is not None:
            update["nics"] = await nic_specs(s, vm.id, vm.host_id)
            update["config_drive"] = await config_drive(s, vm)
            await s.commit()  # the port groups' tags claimed on the host
    return vm_spec(vm).model_copy(update=update)


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
    async with ctx.deps.db.connect() as conn:  # one Core SELECT: no ORM session on this path
        row = (await conn.execute(_VM_AND_IMAGE, {"b_vm": vid})).first()
    if row is None:
        raise NotFound(f"VM {vid} not found", kind="vm", ref=vid)
    n = len(_VMS.c)
    vm = VmRow(**dict(zip(_VMS.c.keys(), row[:n], strict=True)))
    if row[n] is None:  # the image's id
        raise NotFound(f"image of VM {vid} not found", kind="image", ref=vm.image_id)
    img = ImageRow(**dict(zip(_IMAGES.c.keys(), row[n:], strict=True)))
    ctx.memo["vm_and_image"] = (vm, img)
    return vm, img


async def forget_vm(s: AsyncSession, vm: VmRow) -> None:
    """Delete the VM's row, its NICs (their addresses returned) and its whole-VM snapshot
    records and give its quota usage back (in the caller's transaction); its data volumes stay,
    detached (their snapshot nodes stay, as
    snapshots of the volume alone). Its root volume's row is the caller's to forget."""
    await release_vm_volumes(s, vm.id)
    await forget_nics(s, vm.id)
    await s.execute(
        update(SnapshotRow)
        .where(
            SnapshotRow.vm_snapshot_id.in_(
                select(VmSnapshotRow.id).where(VmSnapshotRow.vm_id == vm.id)
            )
        )
        .values(vm_snapshot_id=None)
        .execution_options(synchronize_session=False)
    )
    await s.execute(
        delete(VmSnapshotRow)
        .where(VmSnapshotRow.vm_id == vm.id)
        .execution_options(synchronize_session=False)
    )
    await quotas.adjust(
        s,
        vm.project_id,
        **{k: -v for k, v in quotas.vm_usage(vm.cpus, vm.memory_mb, vm.disk_gb).items()},
    )
    await s.delete(vm)


_SET_VM: dict[tuple[str, ...], Any] = {}


def _set_vm_statement(columns: tuple[str, ...]) -> Any:
    """``UPDATE vms SET <columns> WHERE id = :b_vm`` with bound values ``v_<column>``, built once
    per column set (so that runs journaled together share one ``executemany``)."""
    stmt = _SET_VM.get(columns)
    if stmt is None:
        stmt = (
            update(_VMS)
            .where(_VMS.c.id == bindparam("b_vm"))
            .values({c: bindparam(f"v_{c}", type_=_VMS.c[c].type) for c in columns})
        )
        _SET_VM[columns] = stmt
    return stmt


def set_vm_with_journal(ctx: Ctx, **values: Any) -> None:
    """``set_vm`` committed with the running step's ``done`` (``Ctx.write_with_journal``)."""
    columns = tuple(sorted(values))
    params = {f"v_{c}": values[c] for c in columns}
    params["b_vm"] = ctx.params["vm_id"]
    ctx.write_with_journal(_set_vm_statement(columns), params)


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
