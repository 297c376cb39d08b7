"""The simulator compute driver: VMs as in-memory state on a simulated host with real capacity."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType

from corral.agent.compute.driver import Capabilities, EventSink
from corral.agent.compute.simulator.capacity import SimCapacity
from corral.agent.compute.simulator.disks import SimDiskOps, disks_of
from corral.agent.compute.simulator.model import SimHost, SimLatencies, SimUsage, SimVm
from corral.agent.compute.simulator.nics import SimNicOps, nics_of
from corral.agent.compute.simulator.vm_snapshots import SimVmSnapshotOps
from corral.agent.faults import FaultPlan
from corral.agent.storage.backend import DiskSource
from corral.agent.storage.driver import VolumeDriver
from corral.api.agent import DataDisk, VmEvent, VmSpec
from corral.api.errors import CorralError, DriverError, InvalidState, NotFound
from corral.api.hosts import HostFacts
from corral.api.vms import PowerState

log = logging.getLogger(__name__)

_FIRST_VNC_PORT = 5900


class SimulatorDriver(SimDiskOps, SimNicOps, SimVmSnapshotOps):
    """A ``ComputeDriver`` whose VMs live in a dict; every operation is O(1) and needs no thread.

    Beyond the Protocol contract:
    - Each mutating operation calls ``faults.check(op)`` first (ops ``vm.define``, ``vm.undefine``,
      ``vm.start``, ``vm.stop``, ``vm.reboot``, ``vm.pause``, ``vm.resume``, ``vm.set_cdrom``
      (no latency), for data volumes ``vm.attach_disk``, ``vm.detach_disk``,
      ``vm.resize_disk``, ``vm.set_disk_qos``, ``vm.snapshot_disk``, ``vm.block_pull`` (see
      ``SimDiskOps``), for NICs ``vm.attach_nic``, ``vm.detach_nic`` (see ``SimNicOps``),
      and for whole-VM snapshots ``vm.fs_freeze``, ``vm.fs_thaw``,
      ``vm.snapshot_vm``, ``vm.restore_vm`` (see ``SimVmSnapshotOps``)), then sleeps its
      ``SimLatencies`` delay, then acts on the state as it is after the sleep.
    - Capacity claims (see ``SimHost``, ``SimCapacity``): a claim beyond the host raises
      ``DriverError`` with ``context["reason"] == "host_capacity"`` and sets
      ``overcommitted_ever``; ``capacity`` keeps usage, peaks and refusals.
    - Every power state change, including define (absent -> stopped) and undefine (-> absent), is
      sent to the event sink; changes made while the driver is closed are not reported (like a
      hypervisor whose events nobody listens to). Reboot is not a power state change.
    - A config drive (``VmSpec.config_drive``) is only recorded, with the spec
      (``SimVm.spec``): no ISO is made.
    - A graceful ``stop`` of a guest that ignores ACPI waits ``timeout`` then powers it off; a
      paused guest cannot handle ACPI and is powered off at once.
    - VMs survive ``close``/``open``: closing models an agent restart, not a host reboot.
    """

    def __init__(
        self,
        host: SimHost,
        *,
        faults: FaultPlan | None = None,
        latencies: SimLatencies | None = None,
        pool: VolumeDriver | None = None,
    ) -> None:
        self.capabilities = Capabilities(name="simulator")
        self.host = host
        self.faults = faults if faults is not None else FaultPlan()
        self.latencies = latencies if latencies is not None else SimLatencies()
        self.pool = pool
        self.capacity = SimCapacity(host)
        self.calls: Counter[str] = Counter()
        self._events: EventSink | None = None
        self._vms: dict[str, SimVm] = {}
        self._stop_waiters: dict[str, asyncio.Event] = {}
        self._releases: dict[tuple[str, str], asyncio.Event] = {}
        self._next_port = _FIRST_VNC_PORT
        self._free_ports: list[int] = []
        self.flattened_roots: set[str] = set()
        self.restores: dict[str, int] = {}

    # --- ComputeDriver -----------------------------------------------------------------------

    async def open(self, events: EventSink) -> None:
        self._events = events

    async def close(self) -> None:
        self._events = None

    async def facts(self) -> HostFacts:
        self._require_open()
        if self.pool is not None:
            total, free = await self.pool.capacity_gb()
        else:
            total, free = self.host.disk_gb, self.host.disk_gb - self.capacity.disk_gb_defined
        return HostFacts(
            hostname=self.host.name,
            cpu_model=self.host.cpu_model,
            cpu_cores=self.host.cpus,
            cpu_threads=self.host.cpus,
            memory_mb=self.host.memory_mb,
            disk_gb_total=total,
            disk_gb_free=free,
            hypervisor="simulator",
            kvm_usable=False,
            driver="simulator",
        )

    async def define(
        self,
        spec: VmSpec,
        disk_path: str | None,
        disks: Sequence[tuple[DataDisk, DiskSource]] = (),
        cdrom: str | None = None,
    ) -> None:
        await self._begin("vm.define", self.latencies.define)
        vm = self._vms.get(spec.vm_id)
        data_disks = disks_of(spec.vm_id, vm, disks)
        nics = nics_of(spec.vm_id, spec.nics)
        if vm is None:
            self.capacity.check_define(spec.vm_id, spec.cpus, spec.memory_mb)
            vm = SimVm(spec=spec, disk_path=disk_path, cpus=spec.cpus, memory_mb=spec.memory_mb)
            vm.disks, vm.cdrom, vm.nics = data_disks, cdrom, nics
            self._vms[spec.vm_id] = vm
            self.capacity.add(vm)
            self._emit(spec.vm_id, PowerState.stopped, "defined")
            return
        if vm.active and (spec.cpus != vm.cpus or spec.memory_mb != vm.memory_mb):
            raise InvalidState(
                f"VM {spec.vm_id} must be stopped to change CPUs or memory",
                vm_id=spec.vm_id,
                power_state=vm.state.value,
            )
        self.capacity.check_define(spec.vm_id, spec.cpus - vm.cpus, spec.memory_mb - vm.memory_mb)
        self.capacity.add(vm, sign=-1)
        vm.spec, vm.disk_path, vm.cpus, vm.memory_mb = spec, disk_path, spec.cpus, spec.memory_mb
        vm.disks, vm.cdrom, vm.nics = data_disks, cdrom, nics
        vm.held_nics.intersection_update(nics)
        self.capacity.add(vm)

    async def set_cdrom(self, vm_id: str, path: str | None) -> None:
        await self._begin("vm.set_cdrom", 0.0)
        self._require(vm_id).cdrom = path

    async def undefine(self, vm_id: str) -> None:
        await self._begin("vm.undefine", self.latencies.undefine)
        vm = self._vms.get(vm_id)
        if vm is None:
            return
        if vm.active:
            self._set_state(vm, PowerState.stopped, "destroyed")
        self.capacity.add(vm, sign=-1)
        del self._vms[vm_id]
        self._emit(vm_id, PowerState.absent, "undefined")

    async def start(self, vm_id: str) -> None:
        await self._begin("vm.start", self.latencies.start)
        vm = self._require(vm_id)
        if vm.state is PowerState.running:
            return
        if vm.state is PowerState.paused:
            raise InvalidState(f"VM {vm_id} is paused: resume it", vm_id=vm_id)
        self.capacity.check_start(vm_id, vm.memory_mb)
        vm.boots += 1
        self._set_state(vm, PowerState.running, "booted")

    async def stop(self, vm_id: str, *, force: bool, timeout: float) -> None:
        await self._begin("vm.stop", self.latencies.stop)
        vm = self._require(vm_id)
        if vm.state is PowerState.stopped:
            return
        if vm.state is PowerState.running and not force:
            if vm.acpi:
                self._set_state(vm, PowerState.stopped, "shutdown")
                return
            await self._wait_stopped(vm_id, timeout)
            current = self._vms.get(vm_id)  # the state may have changed while we waited
            if current is None or current is not vm or current.state is PowerState.stopped:
                return
        self._set_state(vm, PowerState.stopped, "destroyed")

    async def reboot(self, vm_id: str) -> None:
        await self._begin("vm.reboot", self.latencies.reboot)
        vm = self._require(vm_id)
        if vm.state is not PowerState.running:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id)
        vm.boots += 1

    async def pause(self, vm_id: str) -> None:
        await self._begin("vm.pause", self.latencies.pause)
        vm = self._require(vm_id)
        if vm.state is PowerState.paused:
            return
        if vm.state is not PowerState.running:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id)
        self._set_state(vm, PowerState.paused, "paused")

    async def resume(self, vm_id: str) -> None:
        await self._begin("vm.resume", self.latencies.resume)
        vm = self._require(vm_id)
        if vm.state is PowerState.running:
            return
        if vm.state is not PowerState.paused:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not paused", vm_id=vm_id)
        self._set_state(vm, PowerState.running, "resumed")

    async def power_state(self, vm_id: str) -> PowerState:
        self._require_open()
        vm = self._vms.get(vm_id)
        return PowerState.absent if vm is None else vm.state

    async def list_vms(self) -> dict[str, PowerState]:
        self._require_open()
        return {vm_id: vm.state for vm_id, vm in self._vms.items()}

    async def describe(self, vm_id: str) -> dict[str, object]:
        self._require_open()
        vm = self._require(vm_id)
        return {
            "name": vm.spec.name,
            "cpus": vm.cpus,
            "memory_mb": vm.memory_mb,
            "disk_path": vm.disk_path,
            "volumes": sorted(vm.disks),
            "nics": sorted(vm.nics),
            "vnc_port": vm.vnc_port,
        }

    # --- inspection and test helpers ---------------------------------------------------------

    def fail_next(self, op: str, error: CorralError | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` fail (see ``FaultPlan.fail_next``)."""
        self.faults.fail_next(op, error, times)

    @property
    def vms(self) -> Mapping[str, SimVm]:
        """The simulated VMs by id (read-only view; do not mutate the ``SimVm`` objects)."""
        return MappingProxyType(self._vms)

    @property
    def overcommitted_ever(self) -> bool:
        """Whether a claim beyond the host's capacity was ever attempted (see ``SimCapacity``)."""
        return self.capacity.overcommitted_ever

    def usage(self) -> SimUsage:
        """What the VMs on this host claim now."""
        return self.capacity.usage()

    def guest_poweroff(self, vm_id: str) -> None:
        """The guest shut itself down (``poweroff`` inside the VM): stopped, with an event."""
        self._guest_stops(vm_id, PowerState.stopped, "guest shutdown")

    def guest_crash(self, vm_id: str) -> None:
        """The guest crashed (kernel panic, QEMU died): crashed, with an event."""
        self._guest_stops(vm_id, PowerState.crashed, "crashed")

    def guest_ignores_acpi(self, vm_id: str, ignore: bool = True) -> None:
        """Make graceful stops of this VM wait for their timeout, then power it off."""
        self._require(vm_id).acpi = not ignore

    def edit_behind_agent(
        self, vm_id: str, *, cpus: int | None = None, memory_mb: int | None = None
    ) -> None:
        """Change what the hypervisor has without going through the driver (drift)."""
        vm = self._require(vm_id)
        self.capacity.add(vm, sign=-1)
        vm.cpus = vm.cpus if cpus is None else cpus
        vm.memory_mb = vm.memory_mb if memory_mb is None else memory_mb
        self.capacity.add(vm)

    # --- internals ---------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._events is None:
            raise DriverError(f"simulator driver of {self.host.name} is not open")

    def _require(self, vm_id: str) -> SimVm:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise NotFound(f"VM {vm_id} is not defined on {self.host.name}", vm_id=vm_id)
        return vm

    async def _begin(self, op: str, latency: float) -> None:
        self._require_open()
        self.calls[op] += 1
        self.faults.check(op)
        if latency > 0:
            await asyncio.sleep(latency)

    def _set_state(self, vm: SimVm, state: PowerState, reason: str) -> None:
        was_active = vm.active
        vm.state = state
        if vm.active and not was_active:
            self.capacity.set_active(vm, True)
            vm.vnc_port = self._free_ports.pop() if self._free_ports else self._take_port()
        elif was_active and not vm.active:
            self.capacity.set_active(vm, False)
            vm.frozen = False
            waiter = self._stop_waiters.pop(vm.spec.vm_id, None)
            if waiter is not None:
                waiter.set()
            if vm.vnc_port is not None:
                self._free_ports.append(vm.vnc_port)
                vm.vnc_port = None
        self._emit(vm.spec.vm_id, state, reason)

    async def _wait_stopped(self, vm_id: str, timeout: float) -> None:
        """Wait until the VM stops by itself (guest helpers) or ``timeout`` seconds pass."""
        waiter = self._stop_waiters.setdefault(vm_id, asyncio.Event())
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            if self._stop_waiters.get(vm_id) is waiter:
                del self._stop_waiters[vm_id]

    def _take_port(self) -> int:
        port, self._next_port = self._next_port, self._next_port + 1
        return port

    def _guest_stops(self, vm_id: str, state: PowerState, reason: str) -> None:
        vm = self._require(vm_id)
        if not vm.active:
            raise InvalidState(f"VM {vm_id} is {vm.state.value}, not running", vm_id=vm_id)
        self._set_state(vm, state, reason)

    def _emit(self, vm_id: str, state: PowerState, reason: str) -> None:
        sink = self._events
        if sink is None:
            return
        try:
            sink(VmEvent(vm_id=vm_id, power_state=state, reason=reason, at=datetime.now(UTC)))
        except Exception:
            # The state change happened; a failing listener must not turn it into a failure.
            log.exception("event sink failed for VM %s (%s)", vm_id, state.value)
