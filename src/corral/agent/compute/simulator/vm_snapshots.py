"""Whole-VM snapshots of simulated VMs: guest freeze/thaw, several disks switched at once with a
memory state file, and restores from it.

The memory state is a small real file (``b"simulated memory of <vm_id>\\n"``, mode 0600), so
that the agent measures, restores and deletes it as on a real host; the simulator does not read
it back beyond checking that it exists.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

from corral.agent.compute.simulator.capacity import SimCapacity
from corral.agent.compute.simulator.model import SimLatencies, SimVm
from corral.agent.storage.backend import DiskSource
from corral.api.errors import DriverError, InvalidState, NotFound
from corral.api.vms import PowerState


def _write_memory(path: Path, vm_id: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(f"simulated memory of {vm_id}\n".encode())


class SimVmSnapshotOps:
    """The whole-VM snapshot half of ``SimulatorDriver`` (fault ops ``vm.fs_freeze``,
    ``vm.fs_thaw``, ``vm.snapshot_vm``, ``vm.restore_vm``; latencies ``snapshot_vm`` and
    ``restore_vm``). A guest whose agent is silenced (``guest_agent_answers(vm, False)``) is
    never frozen and refuses thaws; ``restores`` counts the restores per VM."""

    latencies: SimLatencies
    capacity: SimCapacity
    restores: dict[str, int]

    def _require(self, vm_id: str) -> SimVm:
        raise NotImplementedError

    async def _begin(self, op: str, latency: float) -> None:
        raise NotImplementedError

    def _set_state(self, vm: SimVm, state: PowerState, reason: str) -> None:
        raise NotImplementedError

    async def fs_freeze(self, vm_id: str, timeout: float) -> bool:
        """Frozen (True) if the VM runs and its guest agent answers, else False."""
        await self._begin("vm.fs_freeze", 0.0)
        vm = self._require(vm_id)
        if vm.state is not PowerState.running or not vm.guest_agent:
            return False
        vm.frozen = True
        return True

    async def fs_thaw(self, vm_id: str, timeout: float) -> None:
        await self._begin("vm.fs_thaw", 0.0)
        vm = self._require(vm_id)
        if not vm.guest_agent:
            raise DriverError("the guest agent is not responding", vm_id=vm_id)
        vm.frozen = False

    async def snapshot_vm(
        self, vm_id: str, disks: Mapping[str, DiskSource], memory: Path | None
    ) -> None:
        """Each disk moves to its new source, its old one going on top of ``chain``; the memory
        file is written first (and removed if a disk is missing)."""
        await self._begin("vm.snapshot_vm", self.latencies.snapshot_vm)
        vm = self._require(vm_id)
        if not vm.active:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id)
        missing = sorted(set(disks) - set(vm.disks))
        if missing:
            raise NotFound(
                f"volume {missing[0]} is not attached to VM {vm_id}",
                vm_id=vm_id,
                volume_id=missing[0],
            )
        todo = [v for v, source in disks.items() if vm.disks[v].source != source]
        if todo and len(todo) != len(disks):
            raise InvalidState(
                f"only some disks of VM {vm_id} are on their new files",
                vm_id=vm_id,
                volumes=sorted(disks),
            )
        if disks and not todo:
            return
        if memory is not None:
            await asyncio.to_thread(_write_memory, memory, vm_id)
        for volume_id in todo:
            sim_disk = vm.disks[volume_id]
            sim_disk.chain.insert(0, sim_disk.source)
            sim_disk.source = disks[volume_id]

    async def restore_vm(self, vm_id: str, memory: Path) -> None:
        """Running afterwards (a restore, not a boot: ``boots`` is not counted, ``restores``
        is); ``DriverError`` if ``memory`` does not exist."""
        await self._begin("vm.restore_vm", self.latencies.restore_vm)
        vm = self._require(vm_id)
        if vm.state is PowerState.running:
            return
        if vm.state is PowerState.paused:
            raise InvalidState(f"VM {vm_id} is paused", vm_id=vm_id, power_state="paused")
        if not await asyncio.to_thread(memory.is_file):
            raise DriverError(f"no memory state file {memory}", vm_id=vm_id, memory=str(memory))
        self.capacity.check_start(vm_id, vm.memory_mb)
        self.restores[vm_id] = self.restores.get(vm_id, 0) + 1
        self._set_state(vm, PowerState.running, "restored")

    # --- test helpers ------------------------------------------------------------------------

    def guest_agent_answers(self, vm_id: str, answers: bool = True) -> None:
        """Make the VM's guest agent answer (or not) freezes and thaws."""
        self._require(vm_id).guest_agent = answers
