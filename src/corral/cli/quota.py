"""``corral quota``: a project's limits and usage (limits are set by platform admins)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli.common import NoWait, Ref, finish, state_of
from corral.cli.output import emit_json, print_table

app = typer.Typer(help="Project quotas: limits and usage.", no_args_is_help=True)

UNLIMITED = ("unlimited", "none", "-")


def parse_limit(text: str) -> int | None:
    """``"10"`` -> 10; ``"unlimited"`` (or ``none``, ``-``) -> None; anything else is a usage
    error."""
    if text.strip().lower() in UNLIMITED:
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise typer.BadParameter(f"{text!r}: give a number >= 0 or 'unlimited'")
    return value


def _limit_option(flag: str, what: str) -> Any:
    return typer.Option(flag, metavar="N|unlimited", help=f"Limit of {what}.")


@app.command("show")
def show(ctx: typer.Context, ref: Ref) -> None:
    """Show a project's limits and what it uses."""
    from corral.api.identity import QUOTA_FIELDS

    state = state_of(ctx)
    quota = state.client().quotas.get(ref)
    if state.json:
        emit_json(quota)
        return
    rows = [(name, getattr(quota, name)) for name in QUOTA_FIELDS]
    print_table(
        rows,
        [
            ("RESOURCE", lambda r: r[0]),
            ("USED", lambda r: r[1].used),
            ("LIMIT", lambda r: "unlimited" if r[1].limit is None else r[1].limit),
        ],
    )


@app.command("set")
def set_limits(
    ctx: typer.Context,
    ref: Ref,
    vms: Annotated[str | None, _limit_option("--vms", "VMs")] = None,
    vcpus: Annotated[str | None, _limit_option("--vcpus", "virtual CPUs")] = None,
    memory_mb: Annotated[str | None, _limit_option("--memory-mb", "VM memory, MiB")] = None,
    volume_gb: Annotated[str | None, _limit_option("--volume-gb", "disk space, GiB")] = None,
    snapshots: Annotated[str | None, _limit_option("--snapshots", "snapshots")] = None,
    ips: Annotated[str | None, _limit_option("--ips", "IP addresses")] = None,
    images: Annotated[str | None, _limit_option("--images", "images")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Accept limits below what the project uses now.")
    ] = False,
    no_wait: NoWait = False,
) -> None:
    """Change a project's limits (the others are kept). Platform admins only."""
    from corral.api.errors import InvalidInput

    given = {
        "vms": vms,
        "vcpus": vcpus,
        "memory_mb": memory_mb,
        "volume_gb": volume_gb,
        "snapshots": snapshots,
        "ips": ips,
        "images": images,
    }
    limits = {name: parse_limit(text) for name, text in given.items() if text is not None}
    if not limits:
        raise InvalidInput("give at least one limit (--vms, --vcpus, --memory-mb...)")
    state = state_of(ctx)
    op = state.client().quotas.update(ref, force=force, **limits)
    finish(state, op, no_wait=no_wait, done=f"Quota of {ref} updated.")
