"""Clone a VM (``POST /vms/{ref}/clone``, full, linked or instant): the request's checks and the
``vm.clone`` operation (see ``workflows.vm_clone``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InvalidInput, InvalidState
from corral.api.operations import Operation
from corral.api.vms import VmClone
from corral.server.db.tables import HostRow, ImageRow, StoragePoolRow, VmRow, VolumeRow
from corral.server.identity import quotas
from corral.server.identity.access import creation_project, require
from corral.server.identity.caller import Caller
from corral.server.services.context import Services
from corral.server.services.image_capture import new_image, vm_source
from corral.server.services.inventory import ensure_name_free
from corral.server.services.listing import get_row
from corral.server.services.operations import to_model as op_model
from corral.server.services.vms import visible_vms
from corral.server.workflows.vm_clone import VM_CLONE

NAME_MAX = 63
GIB = 1 << 30


def clone_names(spec: VmClone) -> list[str]:
    """``spec.name`` for one clone, ``<name>-1`` … ``<name>-<count>`` for more;
    ``InvalidInput`` if they would be longer than a name may be."""
    names = (
        [spec.name] if spec.count == 1 else [f"{spec.name}-{i}" for i in range(1, spec.count + 1)]
    )
    if any(len(n) > NAME_MAX for n in names):
        raise InvalidInput(
            f"clone names {names[-1]!r} would be longer than {NAME_MAX} characters",
            name=spec.name,
            count=spec.count,
        )
    return names


def base_name(spec: VmClone) -> str:
    """The name of the image the clones are made from."""
    return f"{spec.name[: NAME_MAX - 5]}-base"


async def _root_pool(s: AsyncSession, source: VmRow, spec: VmClone) -> str | None:
    """The pool (id) the clones' root volumes go to: ``spec.pool``, else the source's root
    volume's pool, else None (host-local root disks). ``InvalidInput`` for a pool with a
    linked or instant clone; ``InvalidState`` for a pool that takes no new volumes."""
    if spec.pool is not None:
        if spec.mode != "full":
            raise InvalidInput("only full clones go to another pool", mode=spec.mode)
        pool = await get_row(s, StoragePoolRow, spec.pool, "storage_pool")
    elif source.root_volume_id is not None:
        vol = await s.get(VolumeRow, source.root_volume_id)
        assert vol is not None  # the root volume goes only with its VM
        found = await s.get(StoragePoolRow, vol.pool_id)
        assert found is not None  # foreign key
        pool = found
    else:
        return None
    if pool.state != "enabled":
        raise InvalidState(
            f"storage pool {pool.name!r} is {pool.state}: no new volumes go there",
            pool=pool.name,
            state=pool.state,
        )
    return pool.id


def publish_later(spec: VmClone, source: VmRow, pinned: str | None, root_pool: str | None) -> bool:
    """Whether a clone's base is captured into the source host's image cache only and sent to
    the image store after the clones exist (``image.publish``): full clones with host-local
    root disks (no ``root_pool``), not pinned to another host than the source's. Otherwise
    (pinned elsewhere, root volumes) the base is sent to the store before the clones are made,
    as any capture."""
    return spec.mode == "full" and root_pool is None and pinned in (None, source.host_id)


async def clone_vm(*, svc: Services, ref: str, spec: VmClone, caller: Caller) -> Operation:
    """Check and queue a ``vm.clone`` of the VM ``ref`` into the caller's project: the source
    must be stopped for linked and instant clones, stopped or running for full ones
    (``InvalidState``), the clones' and the base image's names free
    (``NameTaken``) and the quota must hold the clones and the image (``QuotaExceeded``);
    nothing is recorded on a 4xx; linked and instant clones stay in the source's project and on
    its host (``InvalidInput``). The base image is recorded (``importing``) and charged now,
    the clones once it is made (``publish_later``: how a full clone's base reaches the image
    store)."""
    project_id = creation_project(caller, "vm:create")
    names = clone_names(spec)
    async with svc.sessionmaker() as s:
        source = await get_row(s, VmRow, ref, "vm", where=visible_vms(caller))
        require(caller, "vm:get", source.project_id)
        if spec.mode != "full" and source.root_volume_id is not None:
            raise InvalidState(
                f"VM {source.name!r} has a root volume: {spec.mode} clones are of host-local"
                " root disks; clone it with mode full",
                reason="root_volume",
                mode=spec.mode,
            )
        root_pool = await _root_pool(s, source, spec)
        src = vm_source(source, live=spec.mode == "full")
        pinned = (await get_row(s, HostRow, spec.host, "host")).id if spec.host else None
        if spec.mode != "full" and source.project_id != project_id:
            raise InvalidInput(
                f"{spec.mode} clones share a layer with their source: they go to its project",
                mode=spec.mode,
                project_id=source.project_id,
            )
        if spec.mode != "full" and pinned not in (None, source.host_id):
            raise InvalidInput(
                f"{spec.mode} clones run on their source's host: leave host out",
                mode=spec.mode,
            )
        for name in names:
            await ensure_name_free(s, VmRow, name, "VM", project_id=project_id)
        await ensure_name_free(s, ImageRow, base_name(spec), "image", project_id=project_id)
        usage = quotas.vm_usage(source.cpus, source.memory_mb, source.disk_gb)
        everything = {k: v * len(names) for k, v in usage.items()}
        await quotas.adjust(s, project_id, **everything)  # raises if the clones do not fit
        await quotas.adjust(s, project_id, **{k: -v for k, v in everything.items()})
        image = new_image(base_name(spec), project_id, caller.user_id, src)
        if spec.mode != "full":  # a layer: on the source's host only, over its image
            image.host_id = source.host_id
            image.parent_id = source.image_id
            image.format = "qcow2"
            image.virtual_size_bytes = source.disk_gb * GIB
        s.add(image)
        await s.flush()
        await quotas.adjust(s, project_id, images=1)
        op = svc.runner.create(
            s,
            type=VM_CLONE.type,
            target_type="vm",
            target_id=source.id,
            lock_key=src.lock_key,
            params={
                "mode": spec.mode,
                "image_id": image.id,
                **src.params,
                "names": names,
                "project_id": project_id,
                "owner_id": caller.user_id,
                "cpus": source.cpus,
                "memory_mb": source.memory_mb,
                "disk_gb": source.disk_gb,
                "offering_id": source.offering_id,
                "pinned": pinned,
                "publish_later": publish_later(spec, source, pinned, root_pool),
                "start": spec.start,
                "root_pool": root_pool,
            },
            project_id=project_id,
            user_id=caller.user_id,
        )
        await s.commit()
    svc.runner.launch(op)
    return op_model(op)
