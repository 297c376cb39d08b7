"""What each agent task does with the drivers and the spec store.

Every task first calls ``faults.check("agent." + kind)`` (e.g. ``agent.vm.start``): fault injection
that works whatever the driver. The simulated drivers check the same ``FaultPlan`` under their own
operation names (``vm.start`` …), so tests can fail either the agent step or the driver call.

Ordering rules (so that a crash at any point leaves a state reconcile handles correctly):
- ``vm.define``: the driver defines first, then the spec file is written. A spec file therefore only
  ever describes a definition the hypervisor accepted, and "spec without VM" at start-up safely means
  "lost: redefine it". If writing the spec fails, the driver change is undone (old definition
  restored, or the new VM undefined). A crash between the two leaves a VM without spec, reported as
  drift "unknown to agent" until the server retries the (idempotent) define.
- ``vm.undefine``: the spec file is renamed to ``.deleting`` first, then the driver undefines, then
  the file is removed. If the driver fails, the file is renamed back. A crash leaves a ``.deleting``
  file that reconcile finishes (undefine again, remove), so a deleted VM never comes back.
"""

from __future__ import annotations

import logging

from corral.agent.compute.driver import ComputeDriver
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore, StoredSpec, check_vm_id
from corral.agent.storage.driver import Fetcher, VolumeDriver
from corral.api.agent import DiskCreate, DiskDelete, VmDefine, VmPower, VmSpec, VmUndefine
from corral.api.errors import CorralError
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

Payload = DiskCreate | DiskDelete | VmDefine | VmUndefine | VmPower


def payload_vm_id(payload: Payload) -> str:
    """The VM a task is about (tasks on one VM are serialized on it)."""
    return payload.spec.vm_id if isinstance(payload, VmDefine) else payload.vm_id


class TaskExecutor:
    """Runs task payloads against one host's drivers. ``drift`` notes of a VM are cleared when a
    define or undefine of it succeeds."""

    def __init__(
        self,
        *,
        compute: ComputeDriver,
        volumes: VolumeDriver,
        specs: SpecStore,
        faults: FaultPlan,
        fetch: Fetcher,
        drift: dict[str, list[str]],
    ) -> None:
        self.compute = compute
        self.volumes = volumes
        self.specs = specs
        self.faults = faults
        self.fetch = fetch
        self.drift = drift

    async def run(self, payload: Payload) -> dict[str, object]:
        """Do the task; returns its result or raises a ``CorralError``."""
        vm_id = check_vm_id(payload_vm_id(payload))
        self.faults.check(f"agent.{payload.kind}")
        match payload:
            case DiskCreate():
                path = await self.volumes.create_vm_disk(
                    vm_id, payload.image, payload.size_gb, self.fetch
                )
                return {"path": path}
            case DiskDelete():
                await self.volumes.delete_vm_disk(vm_id)
                return {}
            case VmDefine():
                await self.define(payload.spec)
                return {}
            case VmUndefine():
                await self.undefine(vm_id)
                return {}
            case VmPower():
                return {"power_state": await self.power(payload)}

    async def define(self, spec: VmSpec) -> None:
        vm_id = spec.vm_id
        disk_path = self.volumes.disk_path(vm_id)
        old = self.specs.get(vm_id)
        existed = old is not None or await self.compute.power_state(vm_id) != PowerState.absent
        await self.compute.define(spec, disk_path)
        try:
            await self.specs.put_async(StoredSpec(spec=spec, disk_path=disk_path))
        except BaseException:
            await self._undo_define(vm_id, old, existed)
            raise
        self.drift.pop(vm_id, None)

    async def _undo_define(self, vm_id: str, old: StoredSpec | None, existed: bool) -> None:
        try:
            if old is not None:
                await self.compute.define(old.spec, old.disk_path)
            elif not existed:
                await self.compute.undefine(vm_id)
        except CorralError as exc:
            log.error("vm %s: cannot undo define after spec write failed: %s", vm_id, exc)

    async def undefine(self, vm_id: str) -> None:
        stored = self.specs.begin_delete(vm_id)
        try:
            await self.compute.undefine(vm_id)
        except BaseException:
            self.specs.abort_delete(vm_id, stored)
            raise
        self.specs.delete(vm_id)
        self.drift.pop(vm_id, None)

    async def power(self, payload: VmPower) -> str:
        vm_id = payload.vm_id
        match payload.kind:
            case "vm.start":
                await self.compute.start(vm_id)
            case "vm.stop":
                await self.compute.stop(vm_id, force=payload.force, timeout=payload.timeout)
            case "vm.reboot":
                await self.compute.reboot(vm_id)
            case "vm.pause":
                await self.compute.pause(vm_id)
            case "vm.resume":
                await self.compute.resume(vm_id)
        return str(await self.compute.power_state(vm_id))
