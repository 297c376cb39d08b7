"""``corral volume``: volumes: create, list, show, attach/detach, resize, I/O limits, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import typer

from corral.cli.common import (
    CliState,
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
from corral.cli.output import Column, emit_json, gib, print_page
from corral.cli.recycle import add_expungeable_delete
from corral.cli.sizes import gib_option, parse_bytes

if TYPE_CHECKING:
    from corral.api.common import Page
    from corral.api.volumes import Volume
    from corral.sdk import Client, Operation

app = typer.Typer(
    help="Volumes: disks of their own on a storage pool, attached to VMs (role data; role root:"
    " a VM's root disk, made and deleted with it).",
    no_args_is_help=True,
)

IOPS_FIELDS = ("total_iops_sec", "read_iops_sec", "write_iops_sec")
BPS_FIELDS = ("total_bytes_sec", "read_bytes_sec", "write_bytes_sec")


def rate_option(text: str) -> int:
    """Bytes per second for a Typer option: a bare number is bytes, ``100M`` / ``1G`` are binary
    multiples; 0 is unlimited. A bad value is a usage error."""
    try:
        return parse_bytes(text, default_unit="")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


Size = Annotated[
    int,
    typer.Option(
        "--size",
        "-s",
        parser=gib_option,
        metavar="SIZE",
        help="GiB, or 10G, 1.5T...",
        show_default=False,
    ),
]
Iops = Annotated[
    int | None,
    typer.Option("--iops", min=0, help="Limit of I/O operations per second (0: no limit)."),
]
ReadIops = Annotated[
    int | None, typer.Option("--read-iops", min=0, help="Limit of reads per second.")
]
WriteIops = Annotated[
    int | None, typer.Option("--write-iops", min=0, help="Limit of writes per second.")
]
Bps = Annotated[
    int | None,
    typer.Option(
        "--bps",
        parser=rate_option,
        metavar="RATE",
        help="Limit of bytes per second, or 100M, 1G... (0: no limit).",
    ),
]
ReadBps = Annotated[
    int | None,
    typer.Option("--read-bps", parser=rate_option, metavar="RATE", help="Read bytes per second."),
]
WriteBps = Annotated[
    int | None,
    typer.Option(
        "--write-bps", parser=rate_option, metavar="RATE", help="Written bytes per second."
    ),
]


def qos_limits(
    given: Mapping[str, int | None], current: Mapping[str, int] | None = None
) -> dict[str, int] | None:
    """The I/O limits to send for the QoS flags ``given`` (``VolumeQos`` field → value or
    ``None``), or ``None`` if no flag was given. Per unit (IOPS, bytes/s): a unit with a flag
    given gets exactly the given limits (the others of that unit 0: no limit); a unit without
    keeps the ``current`` limits (none on create). ``--iops`` with ``--read-iops`` is refused
    when the SDK validates the request (a total excludes the read/write pair)."""
    if all(value is None for value in given.values()):
        return None
    limits: dict[str, int] = {}
    for unit in (IOPS_FIELDS, BPS_FIELDS):
        if any(given.get(key) is not None for key in unit):
            limits.update({key: given.get(key) or 0 for key in unit})
        else:
            limits.update({key: (current or {}).get(key, 0) for key in unit})
    return limits


def _given(
    iops: int | None,
    read_iops: int | None,
    write_iops: int | None,
    bps: int | None,
    read_bps: int | None,
    write_bps: int | None,
) -> dict[str, int | None]:
    return dict(
        zip(
            IOPS_FIELDS + BPS_FIELDS,
            (iops, read_iops, write_iops, bps, read_bps, write_bps),
            strict=True,
        )
    )


def columns(vm_names: Mapping[str, str], pool_names: Mapping[str, str]) -> list[Column]:
    """The table of volumes; ids are shown where no name is known."""

    def attached(v: Volume) -> str | None:
        pairs = [f"{vm_names.get(a.vm_id, a.vm_id)}/{a.device}" for a in v.attachments]
        return ",".join(pairs) or None

    return [
        ("NAME", lambda v: v.name),
        ("ID", lambda v: v.id),
        ("STATUS", lambda v: v.status),
        ("SIZE", lambda v: gib(v.size_gb)),
        ("POOL", lambda v: pool_names.get(v.pool_id, v.pool_id)),
        ("ROLE", lambda v: v.role),
        ("VM/DEVICE", attached),
    ]


def print_volumes(state: CliState, client: Client, page: Page[Volume]) -> None:
    """A page of volumes as a table (pool and VM names looked up) or as JSON."""
    if state.json:
        emit_json(page)
        return
    vm_ids = {a.vm_id for v in page.items for a in v.attachments}
    vm_names = names_of(client.vms, vm_ids)
    pool_names = names_of(client.storage_pools, {v.pool_id for v in page.items})
    print_page(page, columns(vm_names, pool_names), json_output=False)


def _device(client: Client, ref: str, vm: str) -> str:
    """``" as vdb"``: the device the volume has in the VM (empty if it is not attached there)."""
    vol = client.volumes.get(ref)
    vm_id = client.vms.get(vm).id
    return next((f" as {a.device}" for a in vol.attachments if a.vm_id == vm_id), "")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Name,
    size: Size,
    pool: Annotated[
        str, typer.Option("--pool", "-p", help="Storage pool name or id.", show_default=False)
    ],
    shareable: Annotated[
        bool, typer.Option("--shareable", help="May be attached to several VMs at once.")
    ] = False,
    vm: Annotated[
        str | None, typer.Option("--vm", help="Attach it to this VM at once (name or id).")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option("--image", "-i", help="Start as a copy of this disk image (name or id)."),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            "--snapshot",
            help="Make it now from this snapshot (same pool; rbd: a copy-on-write clone).",
        ),
    ] = None,
    iops: Iops = None,
    read_iops: ReadIops = None,
    write_iops: WriteIops = None,
    bps: Bps = None,
    read_bps: ReadBps = None,
    write_bps: WriteBps = None,
    no_wait: NoWait = False,
) -> None:
    """Create a volume, blank or a copy of --image (made on the pool at its first attach; --vm
    attaches it now), or made at once from --snapshot."""
    state = state_of(ctx)
    client = state.client()
    qos = qos_limits(_given(iops, read_iops, write_iops, bps, read_bps, write_bps))
    op = client.volumes.create(
        name,
        size_gb=size,
        pool=pool,
        shareable=shareable,
        qos=qos,
        vm=vm,
        image=image,
        snapshot=snapshot,
    )

    def done(o: Operation) -> str:
        text = f"Volume {name} created ({o.target_id})"
        if vm is not None:
            text += f", attached to {vm}{_device(client, o.target_id or name, vm)}"
        return text + "."

    finish(state, op, no_wait=no_wait, done=done)


@app.command("update")
def update(
    ctx: typer.Context,
    ref: Ref,
    new_name: Annotated[
        str | None, typer.Option("--name", help="Rename the volume.", show_default=False)
    ] = None,
    iops: Iops = None,
    read_iops: ReadIops = None,
    write_iops: WriteIops = None,
    bps: Bps = None,
    read_bps: ReadBps = None,
    write_bps: WriteBps = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Remove every I/O limit.")] = False,
    no_wait: NoWait = False,
) -> None:
    """Rename a volume or change its I/O limits (applied live when it is attached).

    IOPS flags replace all IOPS limits and keep the bytes/s ones, and the other way round."""
    given = _given(iops, read_iops, write_iops, bps, read_bps, write_bps)
    flags = any(value is not None for value in given.values())
    if unlimited and flags:
        raise typer.BadParameter("--unlimited excludes the other limits", param_hint="--unlimited")
    if new_name is None and not flags and not unlimited:
        raise typer.BadParameter(
            "give --name, I/O limits (--iops, --bps...) or --unlimited", param_hint="--name"
        )
    state = state_of(ctx)
    client = state.client()
    qos: dict[str, int] | None
    if unlimited:
        qos = dict.fromkeys(IOPS_FIELDS + BPS_FIELDS, 0)
    elif flags:
        current = client.volumes.get(ref).qos.model_dump()
        qos = qos_limits(given, current)
    else:
        qos = None
    op = client.volumes.update(ref, name=new_name, qos=qos)
    finish(state, op, no_wait=no_wait, done=f"Volume {new_name or ref} updated.")


@app.command("attach")
def attach(
    ctx: typer.Context,
    ref: Ref,
    vm: Annotated[str, typer.Argument(help="VM name or id.", show_default=False)],
    no_wait: NoWait = False,
) -> None:
    """Attach a volume to a VM (running or stopped) as its next free disk (vdb...)."""
    state = state_of(ctx)
    client = state.client()
    op = client.volumes.attach(ref, vm)
    finish(
        state,
        op,
        no_wait=no_wait,
        done=lambda o: f"Volume {ref} attached to {vm}{_device(client, o.target_id or ref, vm)}.",
    )


@app.command("detach")
def detach(
    ctx: typer.Context,
    ref: Ref,
    vm: Annotated[
        str | None,
        typer.Option("--vm", help="The VM to detach from (a shareable volume on several)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0, max=600, help="Seconds the guest gets to release the disk."
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Detach a volume from its VM; the guest must release the disk (unmount it) in time."""
    state = state_of(ctx)
    op = state.client().volumes.detach(ref, vm=vm, timeout=timeout)
    where = f" from {vm}" if vm else ""
    finish(state, op, no_wait=no_wait, done=f"Volume {ref} detached{where}.")


@app.command("resize")
def resize(ctx: typer.Context, ref: Ref, size: Size, no_wait: NoWait = False) -> None:
    """Grow a volume (live when its VM runs); volumes never shrink."""
    state = state_of(ctx)
    op = state.client().volumes.resize(ref, size)
    finish(state, op, no_wait=no_wait, done=f"Volume {ref} resized to {gib(size)}.")


@app.command("move")
def move(
    ctx: typer.Context,
    ref: Ref,
    pool: Annotated[str, typer.Option("--pool", "-p", help="The pool to move it to.")],
    no_wait: NoWait = False,
) -> None:
    """Move a detached volume (no snapshots) to another pool: its data is copied there, then
    the old copy deleted; its id, name and size stay."""
    state = state_of(ctx)
    op = state.client().volumes.move(ref, pool)
    finish(state, op, no_wait=no_wait, done=f"Volume {ref} moved to pool {pool}.")


@app.command("schedule")
def schedule(
    ctx: typer.Context,
    ref: Ref,
    every: Annotated[
        int | None,
        typer.Option("--every", min=1, help="Minutes between automatic snapshots."),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option("--keep", min=1, max=128, help="Automatic snapshots to keep."),
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop the automatic snapshots.")] = False,
    no_wait: NoWait = False,
) -> None:
    """Automatic snapshots of a volume: every N minutes, keeping the newest K (manual
    snapshots are never deleted by the schedule)."""
    state = state_of(ctx)
    if off:
        if every is not None or keep is not None:
            raise typer.BadParameter("--off excludes --every and --keep", param_hint="--off")
        op = state.client().volumes.unschedule_snapshots(ref)
        finish(state, op, no_wait=no_wait, done=f"Volume {ref}: automatic snapshots stopped.")
        return
    if every is None or keep is None:
        raise typer.BadParameter("give --every and --keep (or --off)", param_hint="--every")
    op = state.client().volumes.schedule_snapshots(ref, every_minutes=every, keep=keep)
    done = f"Volume {ref}: a snapshot every {every} min, keeping {keep}."
    finish(state, op, no_wait=no_wait, done=done)


@app.command("list")
def list_volumes(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", help="e.g. available, in_use, error.")
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", help="Only volumes of this pool (name).")
    ] = None,
    vm: Annotated[
        str | None, typer.Option("--vm", help="Only the volumes attached to this VM.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List volumes."""
    state = state_of(ctx)
    client = state.client()
    conditions = [c for c in (where, f"pool.name={pool}" if pool else None) if c]
    listing = client.volumes.attached_to(vm) if vm else client.volumes
    page = listing.list(
        limit=limit,
        offset=offset,
        sort=sort,
        q=",".join(conditions) or None,
        tag=tag,
        status=status,
    )
    print_volumes(state, client, page)


add_show_delete(app, noun="volume", collection=lambda c: c.volumes)
add_expungeable_delete(app, noun="volume", collection=lambda c: c.volumes)
