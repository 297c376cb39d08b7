"""Data volumes of simulated VMs: attach, detach, live grow and I/O limits on the in-memory model.

The simulated hypervisor has one definition per VM (no separate live and persistent copies):
a change made while the VM is live (running or paused) is a hot-plug and applies to both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from corral.agent.compute.simulator.model import SimDisk, SimLatencies, SimVm
from corral.agent.storage.backend import DiskSource
from corral.api.agent import DataDisk
from corral.api.errors import InvalidInput, InvalidState, NotFound
from corral.api.volumes import VolumeQos


def check_disk(vm_id: str, disk: DataDisk, source: DiskSource) -> None:
    """``InvalidInput`` for what libvirt refuses too: a shareable disk that is not raw."""
    if disk.shareable and source.format != "raw":
        raise InvalidInput(
            "a shareable disk must be raw (QEMU cannot share a qcow2 image)",
            vm_id=vm_id,
            volume_id=disk.volume.volume_id,
            format=source.format,
        )


def disks_of(
    vm_id: str, old: SimVm | None, disks: Sequence[tuple[DataDisk, DiskSource]]
) -> dict[str, SimDisk]:
    """The data disks of a (re)definition, keeping what the guest saw of volumes it already had
    (a live-grown size, a held disk). ``InvalidInput`` for duplicates or a bad disk."""
    result: dict[str, SimDisk] = {}
    devices: set[str] = set()
    for disk, source in disks:
        check_disk(vm_id, disk, source)
        volume_id = disk.volume.volume_id
        if volume_id in result or disk.device in devices:
            raise InvalidInput("data disks must have distinct devices and volumes", vm_id=vm_id)
        devices.add(disk.device)
        new = SimDisk.of(disk, source)
        previous = old.disks.get(volume_id) if old is not None else None
        if previous is not None:
            new.size_bytes = max(new.size_bytes, previous.size_bytes)
            new.held = previous.held
            if previous.source == source:
                new.chain = list(previous.chain)
        result[volume_id] = new
    return result


class SimDiskOps:
    """The data-volume half of ``SimulatorDriver`` (fault ops ``vm.attach_disk``,
    ``vm.detach_disk``, ``vm.resize_disk``, ``vm.set_disk_qos``, ``vm.snapshot_disk``,
    ``vm.block_pull``; latencies of the same names)."""

    latencies: SimLatencies
    _releases: dict[tuple[str, str], asyncio.Event]
    flattened_roots: set[str]

    def _require(self, vm_id: str) -> SimVm:
        raise NotImplementedError

    async def _begin(self, op: str, latency: float) -> None:
        raise NotImplementedError

    async def attach_disk(self, vm_id: str, disk: DataDisk, source: DiskSource) -> None:
        await self._begin("vm.attach_disk", self.latencies.attach_disk)
        vm = self._require(vm_id)
        volume_id = disk.volume.volume_id
        if volume_id in vm.disks:
            return
        check_disk(vm_id, disk, source)
        for other in vm.disks.values():
            if other.disk.device == disk.device:
                raise InvalidState(
                    f"device {disk.device} of VM {vm_id} is used by another disk",
                    vm_id=vm_id,
                    volume_id=volume_id,
                    device=disk.device,
                    used_by=other.disk.volume.volume_id,
                )
        vm.disks[volume_id] = SimDisk.of(disk, source)

    async def detach_disk(self, vm_id: str, volume_id: str, timeout: float) -> None:
        """A live VM whose guest holds the disk (``guest_holds_disk``) keeps it unless the guest
        lets go within ``timeout``: then ``InvalidState``."""
        await self._begin("vm.detach_disk", self.latencies.detach_disk)
        try:
            vm = self._require(vm_id)
        except NotFound:
            return
        sim_disk = vm.disks.get(volume_id)
        if sim_disk is None:
            return
        if vm.active and sim_disk.held:
            released = self._releases.setdefault((vm_id, volume_id), asyncio.Event())
            try:
                await asyncio.wait_for(released.wait(), timeout)
            except TimeoutError:
                raise InvalidState(
                    f"the guest did not release the disk within {timeout:g} s",
                    vm_id=vm_id,
                    volume_id=volume_id,
                    timeout=timeout,
                    power_state=vm.state.value,
                ) from None
        vm.disks.pop(volume_id, None)

    async def resize_disk(self, vm_id: str, volume_id: str, size_bytes: int) -> None:
        await self._begin("vm.resize_disk", self.latencies.resize_disk)
        vm = self._require(vm_id)
        if not vm.active:
            raise InvalidState(
                f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id, volume_id=volume_id
            )
        sim_disk = self._disk(vm, volume_id)
        sim_disk.size_bytes = max(sim_disk.size_bytes, size_bytes)

    async def set_disk_qos(self, vm_id: str, volume_id: str, qos: VolumeQos) -> None:
        await self._begin("vm.set_disk_qos", self.latencies.set_disk_qos)
        sim_disk = self._disk(self._require(vm_id), volume_id)
        sim_disk.disk = sim_disk.disk.model_copy(update={"qos": qos})

    async def disk_file(self, vm_id: str, volume_id: str) -> str | None:
        sim_disk = self._require(vm_id).disks.get(volume_id)
        if sim_disk is None:
            return None
        source = sim_disk.source
        return source.path if source.kind == "file" else source.name

    async def snapshot_disk(
        self, vm_id: str, volume_id: str, new_source: DiskSource, quiesce: bool
    ) -> None:
        """The live disk moves to ``new_source``, its old file going on top of ``chain``."""
        await self._begin("vm.snapshot_disk", self.latencies.snapshot_disk)
        vm = self._require(vm_id)
        sim_disk = self._live_disk(vm, volume_id)
        if sim_disk.source == new_source:
            return
        sim_disk.chain.insert(0, sim_disk.source)
        sim_disk.source = new_source

    async def block_pull(self, vm_id: str, volume_id: str, base: DiskSource | None) -> None:
        """``chain`` is cut at ``base`` (emptied for None). A base the simulator did not see
        (the chain changed offline, or the agent restarted) becomes the whole chain."""
        await self._begin("vm.block_pull", self.latencies.block_pull)
        sim_disk = self._live_disk(self._require(vm_id), volume_id)
        if base is None:
            sim_disk.chain = []
        elif base in sim_disk.chain:
            sim_disk.chain = sim_disk.chain[sim_disk.chain.index(base) :]
        else:
            sim_disk.chain = [base]

    async def copy_root(self, vm_id: str, dest: Path) -> None:
        """Fault op ``vm.copy_root``; ``InvalidState`` unless the VM runs. Writes
        ``b"simulated live copy of <vm_id>\n"`` to ``dest``."""
        await self._begin("vm.copy_root", self.latencies.block_pull)
        vm = self._require(vm_id)
        if not vm.active:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id)
        await asyncio.to_thread(dest.write_bytes, f"simulated live copy of {vm_id}\n".encode())

    async def flatten_root(self, vm_id: str) -> None:
        """Fault op ``vm.flatten_root``; ``InvalidState`` unless the VM runs. Counted in
        ``flattened_roots``."""
        await self._begin("vm.flatten_root", self.latencies.block_pull)
        vm = self._require(vm_id)
        if not vm.active:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id)
        self.flattened_roots.add(vm_id)

    # --- test helpers ------------------------------------------------------------------------

    def guest_holds_disk(self, vm_id: str, volume_id: str, hold: bool = True) -> None:
        """Make the guest refuse (``hold``) or accept hot-unplugs of the disk; accepting
        completes a detach that is waiting."""
        sim_disk = self._disk(self._require(vm_id), volume_id)
        sim_disk.held = hold
        waiter = self._releases.pop((vm_id, volume_id), None)
        if not hold and waiter is not None:
            waiter.set()

    @classmethod
    def _live_disk(cls, vm: SimVm, volume_id: str) -> SimDisk:
        if not vm.active:
            raise InvalidState(
                f"VM {vm.spec.vm_id} is {vm.state.value}, not running",
                vm_id=vm.spec.vm_id,
                volume_id=volume_id,
            )
        return cls._disk(vm, volume_id)

    @staticmethod
    def _disk(vm: SimVm, volume_id: str) -> SimDisk:
        sim_disk = vm.disks.get(volume_id)
        if sim_disk is None:
            vm_id = vm.spec.vm_id
            raise NotFound(
                f"volume {volume_id} is not attached to VM {vm_id}",
                vm_id=vm_id,
                volume_id=volume_id,
            )
        return sim_disk
