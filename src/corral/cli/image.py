"""``corral image``: import (upload or URL), capture (from a VM, volume or snapshot), list, show,
download, delete."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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
    state_of,
)
from corral.cli.output import Column, console, human_bytes, print_page
from corral.cli.recycle import add_expungeable_delete

if TYPE_CHECKING:
    from corral.sdk import Client, Operation

app = typer.Typer(help="Images: the bases VM disks are created from.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("NAME", lambda i: i.name),
    ("ID", lambda i: i.id),
    ("STATUS", lambda i: i.status),
    ("FORMAT", lambda i: i.format),
    ("SIZE", lambda i: human_bytes(i.size_bytes)),
    ("VIRTUAL SIZE", lambda i: human_bytes(i.virtual_size_bytes)),
]


@contextmanager
def _transfer_bar(state: CliState, label: str) -> Iterator[Callable[[int, int], object] | None]:
    """A progress callback drawing a bytes bar on stderr (``None`` when not a terminal)."""
    err_console = console(stderr=True, force_terminal=state.force_terminal)
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        yield update


@app.command("import")
def import_image(
    ctx: typer.Context,
    name: Name,
    path: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, help="Local qcow2 or raw file to upload."),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Have the server download the image instead.")
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Import an image from a local file (uploaded with a progress bar) or from a URL."""
    if (path is None) == (url is None):
        raise typer.BadParameter("give a PATH to upload or --url, not both", param_hint="PATH")
    state = state_of(ctx)
    client = state.client()
    if url is not None:
        op = client.images.import_url(name, url)
    else:
        assert path is not None
        with _transfer_bar(state, f"Uploading {path.name}") as progress:
            op = client.images.import_file(name, path, progress=progress)
    finish(state, op, no_wait=no_wait, done=f"Image {name} imported ({op.target_id}).")


@app.command("capture")
def capture(
    ctx: typer.Context,
    name: Name,
    vm: Annotated[
        str | None,
        typer.Option("--vm", help="Capture this VM's root disk (the VM must be stopped)."),
    ] = None,
    volume: Annotated[
        str | None,
        typer.Option("--volume", help="Capture this volume's data (detached, or its VMs stopped)."),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option("--snapshot", help="Capture the volume's data at this snapshot (any time)."),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Make an image from a disk: a stopped VM's root disk, a volume or a snapshot."""
    sources = {"VM": vm, "volume": volume, "snapshot": snapshot}
    given = [(kind, ref) for kind, ref in sources.items() if ref is not None]
    if len(given) != 1:
        raise typer.BadParameter(
            "give exactly one of --vm, --volume or --snapshot",
            param_hint="--vm/--volume/--snapshot",
        )
    kind, ref = given[0]
    state = state_of(ctx)
    client = state.client()
    op = client.images.capture(name, vm=vm, volume=volume, snapshot=snapshot)
    finish(
        state,
        op,
        no_wait=no_wait,
        done=lambda o: _captured(client, name, f"{kind} {ref}", o),
    )


def _captured(client: Client, name: str, source: str, op: Operation) -> str:
    image = client.images.get(op.target_id or name)
    size = human_bytes(image.size_bytes)
    fmt = image.format or "unknown format"
    return f"Image {image.name} captured from {source} ({image.id}): {fmt}, {size}."


@app.command("download")
def download(
    ctx: typer.Context,
    ref: Ref,
    path: Annotated[Path, typer.Argument(dir_okay=False, help="Where to save it.")],
) -> None:
    """Download an image's data to a local file."""
    state = state_of(ctx)
    with _transfer_bar(state, f"Downloading {ref}") as progress:
        size = state.client().images.download(ref, path, progress=progress)
    typer.echo(f"Saved {human_bytes(size)} to {path}.")


@app.command("list")
def list_images(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", help="importing, ready or error.")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort: Sort = None,
    where: Where = None,
    tag: Tags = None,
) -> None:
    """List images."""
    state = state_of(ctx)
    page = state.client().images.list(
        limit=limit, offset=offset, sort=sort, q=where, tag=tag, status=status
    )
    print_page(page, COLUMNS, json_output=state.json)


add_show_delete(app, noun="image", collection=lambda c: c.images)
add_expungeable_delete(app, noun="image", collection=lambda c: c.images)
