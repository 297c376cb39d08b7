"""What a VM leaves behind, seen from the REST API and from the host agent's runtime.

``leftovers`` lists everything that still exists of a VM (an empty list: the VM is fully gone);
``vm_state`` describes a VM that should exist, so tests can compare it before and after a failure.
Both look at the server (row, claims, operations) and at the host (hypervisor, disk, spec file).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from corral.agent.compute.simulator import SimulatedPool
from corral.agent.runtime import HostRuntime
from corral.agent.storage.dirpool import DirPool
from corral.api.vms import PowerState

USED = ("cpus_used", "memory_mb_used", "disk_gb_used")
SETTLE_S = 5.0
STABLE_S = 0.15
"""A VM's status may lag behind its host for a moment: the host's events (batched for 50 ms) and
heartbeats built before an operation's change can be applied after it, flipping the status back
until the next event or heartbeat (see tests/integration/test_power_state_races.py). Checks
therefore wait until the state holds for ``STABLE_S`` seconds, ``SETTLE_S`` at most."""

T = TypeVar("T")


async def settled(
    get: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    *,
    stable: float = STABLE_S,
    timeout: float = SETTLE_S,
) -> T:
    """``await get()`` once ``ok`` has held of it for ``stable`` seconds, or its last value
    after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    since: float | None = None
    while True:
        value = await get()
        now = loop.time()
        if not ok(value):
            since = None
        elif since is None:
            since = now
        if (since is not None and now - since >= stable) or now >= deadline:
            return value
        await asyncio.sleep(0.05)


async def wait_op(c: httpx.AsyncClient, op_id: str, timeout: float = 60) -> dict[str, Any]:
    """The operation once finished (fails the test if it is still running after ``timeout``)."""
    r = await c.get(f"/operations/{op_id}", params={"wait": timeout})
    r.raise_for_status()
    op: dict[str, Any] = r.json()
    assert op["status"] in ("succeeded", "failed", "cancelled"), op
    return op


async def unfinished_operations(c: httpx.AsyncClient) -> int:
    total = 0
    for status in ("queued", "running"):
        r = await c.get("/operations", params={"status": status})
        r.raise_for_status()
        total += int(r.json()["total"])
    return total


async def host_used(c: httpx.AsyncClient, host_id: str) -> dict[str, float]:
    r = await c.get(f"/hosts/{host_id}")
    r.raise_for_status()
    cap = r.json()["capacity"]
    return {k: cap[k] for k in USED}


def spec_files(runtime: HostRuntime, vm_id: str) -> list[Path]:
    vms = runtime.data_dir / "vms"
    return [p for p in (vms / f"{vm_id}.json", vms / f"{vm_id}.json.deleting") if p.exists()]


def disk_exists(runtime: HostRuntime, vm_id: str) -> bool:
    """Whether the VM's disk exists in the host's pool (simulated or directory)."""
    pool = runtime.volumes
    if isinstance(pool, SimulatedPool):
        return vm_id in pool.disks
    assert isinstance(pool, DirPool), type(pool)
    return Path(pool.disk_path(vm_id)).parent.exists()


async def host_leftovers(runtime: HostRuntime, vm_id: str) -> list[str]:
    """What the host still has of the VM: definition, disk, spec file."""
    found = []
    state = await runtime.compute.power_state(vm_id)
    if state != PowerState.absent:
        found.append(f"VM defined on the host ({state})")
    if disk_exists(runtime, vm_id):
        found.append("disk")
    found += [f"spec file {p.name}" for p in spec_files(runtime, vm_id)]
    return found


async def leftovers(
    c: httpx.AsyncClient, runtime: HostRuntime, *, name: str, vm_id: str, host_id: str
) -> list[str]:
    """Everything that remains of VM ``name`` (id ``vm_id``): [] when it is fully gone. Expects it
    to be the only VM of the host (claims are checked to be back to zero)."""
    found = []
    r = await c.get(f"/vms/{name}")
    if r.status_code != 404:
        found.append(f"GET /vms/{name} -> {r.status_code} {r.text[:200]}")
    used = await host_used(c, host_id)
    if any(used.values()):
        found.append(f"host capacity still claimed: {used}")
    if n := await unfinished_operations(c):
        found.append(f"{n} operation(s) queued or running")
    return found + await host_leftovers(runtime, vm_id)


@dataclass(frozen=True)
class VmState:
    """A VM as the server and its host see it."""

    status: str
    power_state: str
    host_power_state: str
    disk: bool
    spec_file: bool
    used: tuple[float, ...]


async def vm_state(
    c: httpx.AsyncClient, runtime: HostRuntime, *, name: str, host_id: str
) -> VmState:
    r = await c.get(f"/vms/{name}")
    assert r.status_code == 200, r.text
    vm = r.json()
    used = await host_used(c, host_id)
    return VmState(
        status=vm["status"],
        power_state=vm["power_state"],
        host_power_state=str(await runtime.compute.power_state(vm["id"])),
        disk=disk_exists(runtime, vm["id"]),
        spec_file=bool(spec_files(runtime, vm["id"])),
        used=tuple(used[k] for k in USED),
    )
