"""``corral vm``: create, clone, list, show, power actions, resize, CD-ROM and boot order,
whole-VM snapshots, NICs, delete."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli import vm_nic, vm_snapshot
from corral.cli.common import (
    Limit,
    Name,
    NoWait,
    Offset,
    Ref,
    Sort,
    Tags,
    Where,
    add_show_delete,
    finish,
    names_of,
    state_of,
)
from corral.cli.output import Column, gib, mib, print_page
from corral.cli.recycle import add_expungeable_delete
from corral.cli.sizes import gib_option, mib_option
from corral.cli.volume import print_volumes

if TYPE_CHECKING:
    from corral.sdk import Client, Operation

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)

MAX_CLONES = 50
"""``corral.api.vms.MAX_CLONES``, not imported: the CLI starts without loading pydantic."""

Cpus = Annotated[int | None, typer.Option("--cpus", min=1, help="Virtual CPUs.")]
Memory = Annotated[
    int | None,
    typer.Option("--memory", parser=mib_option, metavar="SIZE", help="MiB, or 2G, 512M..."),
]


def _columns(host_names: dict[str, str]) -> list[Column]:
    return [
        ("NAME", lambda v: v.name),
        ("ID", lambda v: v.id),
        ("STATUS", lambda v: v.status),
        ("POWER", lambda v: v.power_state),
        ("CPUS", lambda v: v.cpus),
        ("MEMORY", lambda v: mib(v.memory_mb)),
        ("DISK", lambda v: gib(v.disk_gb)),
        ("HOST", lambda v: host_names.get(v.host_id, v.host_id) if v.host_id else None),
    ]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    image: Annotated[str, typer.Option("--image", "-i", help="Image name or id.")],
    offering: Annotated[
        str | None, typer.Option("--offering", help="Offering name or id (sizes).")
    ] = None,
    cpus: Cpus = None,
    memory: Memory = None,
    disk: Annotated[
        int | None,
        typer.Option("--disk", parser=gib_option, metavar="SIZE", help="GiB, or 10G, 512M..."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Pin to this host.")] = None,
    no_start: Annotated[bool, typer.Option("--no-start", help="Leave it stopped.")] = False,
    volume: Annotated[
        list[str] | None,
        typer.Option(
            "--volume",
            metavar="SIZE@POOL[:NAME]",
            help="A blank data volume made with the VM (repeatable), e.g. 20G@ceph or 5G@loc:logs.",
        ),
    ] = None,
    root_pool: Annotated[
        str | None,
        typer.Option(
            "--root-pool",
            metavar="POOL",
            help="Put the root disk on this storage pool as a volume (NAME-root; needed for"
            " whole-VM snapshots). Default: a disk on the host.",
        ),
    ] = None,
    nic: Annotated[
        list[str] | None,
        typer.Option("--nic", metavar="PG[:KEY=VALUE,...]", help=vm_nic.NIC_SYNTAX),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Create a VM (and start it): sizes from --offering unless given with --cpus/--memory/--disk."""
    volumes = [_volume_spec(v) for v in volume or []]
    nics = [vm_nic.nic_spec(n) for n in nic or []]
    state = state_of(ctx)
    client = state.client()
    op = client.vms.create(
        name,
        image=image,
        offering=offering,
        cpus=cpus,
        memory_mb=memory,
        disk_gb=disk,
        host=host,
        start=not no_start,
        volumes=volumes,
        root_pool=root_pool,
        nics=nics,
    )
    finish(state, op, no_wait=no_wait, done=lambda o: _created(client, name, o))


def _volume_spec(text: str) -> dict[str, Any]:
    """``SIZE@POOL[:NAME]`` -> the ``VmVolume`` fields."""
    size, at, rest = text.partition("@")
    pool, _, name = rest.partition(":")
    if not at or not size or not pool:
        raise typer.BadParameter(f"{text!r}: expected SIZE@POOL[:NAME]", param_hint="--volume")
    spec: dict[str, Any] = {"size_gb": gib_option(size), "pool": pool}
    if name:
        spec["name"] = name
    return spec


def _created(client: Client, name: str, op: Operation) -> str:
    vm = client.vms.get(op.target_id or name)
    where = f" on {client.hosts.get(vm.host_id).name}" if vm.host_id else ""
    if vm.root_volume_id:
        where += f", root volume {client.volumes.get(vm.root_volume_id).name}"
    return f"VM {vm.name} created ({vm.id}){where}: {vm.status.value}."


class CloneMode(StrEnum):
    full = "full"
    linked = "linked"
    instant = "instant"


@app.command("clone")
def clone(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The VM to clone (name or id; stopped).")],
    name: Annotated[
        str,
        typer.Argument(
            help="Name of the clone; with --count N the clones are NAME-1 … NAME-N.",
            show_default=False,
        ),
    ],
    count: Annotated[
        int, typer.Option("--count", "-n", min=1, max=MAX_CLONES, help="How many clones.")
    ] = 1,
    no_start: Annotated[bool, typer.Option("--no-start", help="Leave them stopped.")] = False,
    host: Annotated[
        str | None, typer.Option("--host", help="Pin the clones to this host (full only).")
    ] = None,
    mode: Annotated[
        CloneMode,
        typer.Option(
            "--mode",
            "-m",
            case_sensitive=False,
            help="full: a captured base image; linked: overlays on a frozen layer of the"
            " source's disk (constant time, same host); instant: linked, then made"
            " independent in the background.",
        ),
    ] = CloneMode.full,
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool",
            metavar="POOL",
            help="Full clones: put each clone's root disk on this storage pool as a volume"
            " (default: the source's root volume's pool, or a disk on the host).",
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Clone a stopped VM. Its disk becomes the base image NAME-base (full: captured into the
    image store; linked/instant: frozen in place on its host) and every clone is a
    copy-on-write overlay on it. Data volumes are not cloned; a VM whose root disk is a
    volume is cloned full only."""
    state = state_of(ctx)
    client = state.client()
    op = client.vms.clone(
        source, name, count=count, start=not no_start, host=host, mode=mode.value, pool=pool
    )
    finish(state, op, no_wait=no_wait, done=lambda o: _cloned(client, source, name, count, o))


def clone_names(name: str, count: int) -> list[str]:
    """The names ``corral vm clone`` gives: ``name`` alone, or ``name-1`` … ``name-count``."""
    return [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]


def _cloned(client: Client, source: str, name: str, count: int, op: Operation) -> str:
    """``VM SOURCE cloned into N VM(s) from image BASE (ID):`` then a line per clone."""
    names = clone_names(name, count)
    q = "name=in:" + "|".join(names)
    if op.model.project_id is not None:
        q += f",project_id={op.model.project_id}"
    clones = {vm.name: vm for vm in client.vms.list(q=q, limit=len(names)).items}
    image_ids = {vm.image_id for vm in clones.values() if vm.image_id}
    base = (
        ", ".join(f"{n} ({i})" for i, n in sorted(names_of(client.images, image_ids).items()))
        or f"{name}-base"
    )
    hosts = names_of(client.hosts, {vm.host_id for vm in clones.values() if vm.host_id})
    width = max(len(n) for n in names)
    lines = [f"VM {source} cloned into {len(names)} VM(s) from image {base}:"]
    for n in names:
        vm = clones.get(n)
        if vm is None:
            lines.append(f"  {n:<{width}}  (not found)")
            continue
        where = f" on {hosts.get(vm.host_id, vm.host_id)}" if vm.host_id else ""
        lines.append(f"  {n:<{width}}  {vm.id}  {vm.status.value}{where}")
    return "\n".join(lines)


@app.command("list")
def list_vms(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="e.g. running, stopped.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Only VMs on this host.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List VMs."""
    state = state_of(ctx)
    client = state.client()
    host_id = client.hosts.get(host).id if host else None
    page = client.vms.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, status=status, host_id=host_id
    )
    names: dict[str, str] = {}
    if not state.json and any(vm.host_id for vm in page.items):
        names = {h.id: h.name for h in client.hosts.iter()}
    print_page(page, _columns(names), json_output=state.json)


def _action(ctx: typer.Context, ref: str, verb: str, no_wait: bool, past: str) -> None:
    state = state_of(ctx)
    vms = state.client().vms
    calls = {
        "start": vms.start,
        "reboot": vms.reboot,
        "pause": vms.pause,
        "resume": vms.resume,
    }
    finish(state, calls[verb](ref), no_wait=no_wait, done=f"VM {ref} {past}.")


@app.command("start")
def start(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Start a stopped VM."""
    _action(ctx, ref, "start", no_wait, "started")


@app.command("stop")
def stop(
    ctx: typer.Context,
    ref: Ref,
    force: Annotated[bool, typer.Option("--force", help="Power off at once.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Seconds of ACPI shutdown before forcing."),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Shut a VM down (ACPI, forced after --timeout), or power it off with --force."""
    state = state_of(ctx)
    op = state.client().vms.stop(ref, force=force, timeout=timeout)
    finish(state, op, no_wait=no_wait, done=f"VM {ref} stopped.")


@app.command("reboot")
def reboot(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Reboot a running VM."""
    _action(ctx, ref, "reboot", no_wait, "rebooted")


@app.command("pause")
def pause(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Pause a running VM (it keeps its memory)."""
    _action(ctx, ref, "pause", no_wait, "paused")


@app.command("resume")
def resume(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Resume a paused VM."""
    _action(ctx, ref, "resume", no_wait, "resumed")


@app.command("resize")
def resize(
    ctx: typer.Context, ref: Ref, cpus: Cpus = None, memory: Memory = None, no_wait: NoWait = False
) -> None:
    """Change the CPUs and/or memory of a stopped VM."""
    if cpus is None and memory is None:
        raise typer.BadParameter("give --cpus and/or --memory", param_hint="--cpus/--memory")
    state = state_of(ctx)
    op = state.client().vms.resize(ref, cpus=cpus, memory_mb=memory)
    finish(state, op, no_wait=no_wait, done=f"VM {ref} resized.")


cdrom_app = typer.Typer(help="The VM's CD-ROM drive: insert or eject an ISO image.")
app.add_typer(cdrom_app, name="cdrom")
app.add_typer(vm_snapshot.app, name="snapshot")
app.add_typer(vm_nic.app, name="nic")


@cdrom_app.command("insert")
def cdrom_insert(
    ctx: typer.Context,
    ref: Ref,
    image: Annotated[str, typer.Argument(help="ISO image id or name")],
    no_wait: NoWait = False,
) -> None:
    """Put an ISO image in the VM's CD-ROM drive (live if it runs)."""
    state = state_of(ctx)
    op = state.client().vms.insert_cdrom(ref, image)
    finish(state, op, no_wait=no_wait, done=f"{image} inserted in VM {ref}.")


@cdrom_app.command("eject")
def cdrom_eject(ctx: typer.Context, ref: Ref, no_wait: NoWait = False) -> None:
    """Eject the VM's CD-ROM (live if it runs)."""
    state = state_of(ctx)
    op = state.client().vms.eject_cdrom(ref)
    finish(state, op, no_wait=no_wait, done=f"CD-ROM of VM {ref} ejected.")


@app.command("boot-order")
def boot_order(
    ctx: typer.Context,
    ref: Ref,
    order: Annotated[str, typer.Argument(help="devices in order, comma-separated: cdrom,hd")],
    no_wait: NoWait = False,
) -> None:
    """Set what the VM boots from (applies at its next boot)."""
    boot = [d.strip() for d in order.split(",") if d.strip()]
    state = state_of(ctx)
    op = state.client().vms.set_boot_order(ref, boot)
    finish(state, op, no_wait=no_wait, done=f"VM {ref} boots from {','.join(boot)}.")


@app.command("volumes")
def volumes(
    ctx: typer.Context,
    ref: Ref,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List the volumes attached to a VM (its root volume too, if it has one)."""
    state = state_of(ctx)
    client = state.client()
    page = client.volumes.of_vm(ref, limit=limit, offset=offset, sort=sort, q=where, tag=tag)
    print_volumes(state, client, page)


add_show_delete(app, noun="VM", collection=lambda c: c.vms)
add_expungeable_delete(app, noun="VM", collection=lambda c: c.vms)
