"""Start-up reconciliation of the spec store with the hypervisor, and the VM reports built on it.

``reconcile`` never stops, destroys or starts anything: it finishes interrupted undefines, redefines
VMs whose definition was lost (their spec is on disk, the hypervisor does not know them) and records
differences as drift notes. ``vm_reports`` adds the drift that is recomputed on every heartbeat.
"""

from __future__ import annotations

import logging

from corral.agent.compute.driver import ComputeDriver
from corral.agent.specs import SpecStore, StoredSpec
from corral.agent.storage.volumes import Backends
from corral.agent.volume_tasks import VOLUMES_KEY, disk_sources
from corral.api.agent import VmReport
from corral.api.errors import CorralError
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

REDEFINED = "redefined from local spec"
UNKNOWN = "unknown to agent"
MISSING = "in local spec but not defined"
CORRUPT = "local spec unreadable"


async def reconcile(
    *, compute: ComputeDriver, specs: SpecStore, backends: Backends | None = None
) -> dict[str, list[str]]:
    """Bring the hypervisor in line with the spec store where it is safe; return drift notes by
    vm id. Driver errors for one VM become that VM's notes; only ``list_vms`` failing raises.
    ``backends`` give the sources of the data disks of VMs that must be redefined."""
    backends = backends if backends is not None else Backends({})
    notes: dict[str, list[str]] = {}
    for vm_id in specs.pending_deletes():
        try:
            await compute.undefine(vm_id)
            specs.delete(vm_id)
            log.info("vm %s: finished an interrupted undefine", vm_id)
        except CorralError as exc:
            notes[vm_id] = [f"interrupted undefine could not be finished: {exc.message}"]
    vms = await compute.list_vms()
    for vm_id, stored in specs.all().items():
        if vms.get(vm_id, PowerState.absent) == PowerState.absent:
            notes[vm_id] = await _redefine(compute, stored, backends)
        else:
            notes[vm_id] = await _compare(compute, stored)
    for vm_id in specs.corrupt:
        notes.setdefault(vm_id, []).append(CORRUPT)
    return {vm_id: n for vm_id, n in notes.items() if n}


async def _redefine(compute: ComputeDriver, stored: StoredSpec, backends: Backends) -> list[str]:
    vm_id = stored.spec.vm_id
    try:
        disks = disk_sources(backends, stored.spec.disks)
        await compute.define(stored.spec, stored.disk_path, disks, stored.cdrom_path)
    except CorralError as exc:
        log.warning("vm %s: cannot redefine from local spec: %s", vm_id, exc)
        return [f"redefine from local spec failed: {exc.message}"]
    log.warning("vm %s: definition was lost, redefined from local spec", vm_id)
    return [REDEFINED]


async def _compare(compute: ComputeDriver, stored: StoredSpec) -> list[str]:
    """Drift between what the hypervisor has and the spec (``describe`` keys ``cpus``,
    ``memory_mb``, ``disk_path`` (the root disk), ``volumes`` (sorted data volume ids),
    ``nics`` (sorted NIC ids); keys a driver does not report are not compared)."""
    try:
        actual = await compute.describe(stored.spec.vm_id)
    except CorralError as exc:
        return [f"cannot describe: {exc.message}"]
    wanted: dict[str, object] = {
        "cpus": stored.spec.cpus,
        "memory_mb": stored.spec.memory_mb,
        "disk_path": stored.disk_path,
        VOLUMES_KEY: sorted(d.volume.volume_id for d in stored.spec.disks),
        "nics": sorted(n.nic_id for n in stored.spec.nics),
    }
    return [
        f"{key} {actual[key]} != spec {value}"
        for key, value in wanted.items()
        if key in actual and actual[key] != value
    ]


def vm_reports(
    vms: dict[str, PowerState], specs: dict[str, StoredSpec], notes: dict[str, list[str]]
) -> list[VmReport]:
    """One report per VM the hypervisor has or the spec store knows, sorted by vm id."""
    reports: list[VmReport] = []
    for vm_id in sorted(vms.keys() | specs.keys()):
        drift = list(notes.get(vm_id, []))
        state = vms.get(vm_id, PowerState.absent)
        if vm_id not in specs and state != PowerState.absent:
            drift.append(UNKNOWN)
        elif vm_id in specs and state == PowerState.absent:
            drift.append(MISSING)
        reports.append(VmReport(vm_id=vm_id, power_state=state, drift=drift))
    return reports
