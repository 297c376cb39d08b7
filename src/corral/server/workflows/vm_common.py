"""What VM workflows share: the spec sent to agents, image references, status updates."""

from __future__ import annotations

from typing import Any

from corral.api.agent import ImageRef, VmSpec
from corral.api.errors import NotFound
from corral.server.db.tables import ImageRow, VmRow
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


async def set_vm(ctx: Ctx, **values: Any) -> None:
    """Update the workflow's VM row (absent rows are ignored: undo paths may run after deletion)."""
    async with ctx.deps.sessionmaker.begin() as s:
        vm = await s.get(VmRow, ctx.params["vm_id"])
        if vm is not None:
            for k, v in values.items():
                setattr(vm, k, v)
