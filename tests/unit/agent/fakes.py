"""Hand-written in-memory drivers implementing the ComputeDriver and VolumeDriver protocols."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from corral.agent.compute.driver import Capabilities, EventSink
from corral.agent.storage.driver import Fetcher
from corral.api.agent import ImageRef, VmEvent, VmSpec
from corral.api.errors import InvalidState, NotFound
from corral.api.hosts import HostFacts
from corral.api.vms import PowerState


class FakeCompute:
    """VMs as dicts. ``delay`` slows every call down; ``calls`` records (op, vm_id); ``max_active``
    tracks how many calls ran at once per VM and in total."""

    capabilities = Capabilities(name="fake")

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.specs: dict[str, tuple[VmSpec, str]] = {}
        self.states: dict[str, PowerState] = {}
        self.calls: list[tuple[str, str]] = []
        self.sink: EventSink | None = None
        self.opened = 0
        self.closed = 0
        self._active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.max_total = 0

    async def _op(self, op: str, vm_id: str) -> None:
        self.calls.append((op, vm_id))
        self._active[vm_id] += 1
        self.max_active[vm_id] = max(self.max_active[vm_id], self._active[vm_id])
        self.max_total = max(self.max_total, sum(self._active.values()))
        try:
            await asyncio.sleep(self.delay)
        finally:
            self._active[vm_id] -= 1

    def _set(self, vm_id: str, state: PowerState) -> None:
        if self.states.get(vm_id) == state:
            return
        self.states[vm_id] = state
        if self.sink is not None:
            self.sink(VmEvent(vm_id=vm_id, power_state=state, at=datetime.now(UTC)))

    def _need(self, vm_id: str) -> PowerState:
        if vm_id not in self.states:
            raise NotFound("no such VM", vm_id=vm_id)
        return self.states[vm_id]

    async def open(self, events: EventSink) -> None:
        self.sink = events
        self.opened += 1

    async def close(self) -> None:
        self.sink = None
        self.closed += 1

    async def facts(self) -> HostFacts:
        return HostFacts(
            hostname="fakehost",
            cpu_model="fake",
            cpu_cores=8,
            cpu_threads=16,
            memory_mb=32768,
            disk_gb_total=0,
            disk_gb_free=0,
            hypervisor="simulator",
            kvm_usable=False,
            driver="fake",
        )

    async def define(
        self, spec: VmSpec, disk_path: str, disks: object = (), cdrom: str | None = None
    ) -> None:
        await self._op("define", spec.vm_id)
        old = self.specs.get(spec.vm_id)
        resized = old is not None and (old[0].cpus, old[0].memory_mb) != (spec.cpus, spec.memory_mb)
        if resized and self.states[spec.vm_id] != PowerState.stopped:
            raise InvalidState("stop the VM to resize it", vm_id=spec.vm_id)
        self.specs[spec.vm_id] = (spec, disk_path)
        self.states.setdefault(spec.vm_id, PowerState.stopped)

    async def undefine(self, vm_id: str) -> None:
        await self._op("undefine", vm_id)
        self.specs.pop(vm_id, None)
        if self.states.pop(vm_id, None) not in (None, PowerState.stopped) and self.sink:
            self.sink(VmEvent(vm_id=vm_id, power_state=PowerState.absent, at=datetime.now(UTC)))

    async def start(self, vm_id: str) -> None:
        await self._op("start", vm_id)
        if self._need(vm_id) == PowerState.paused:
            raise InvalidState("VM is paused", vm_id=vm_id)
        self._set(vm_id, PowerState.running)

    async def stop(self, vm_id: str, *, force: bool, timeout: float) -> None:
        await self._op("stop", vm_id)
        self._need(vm_id)
        self._set(vm_id, PowerState.stopped)

    async def reboot(self, vm_id: str) -> None:
        await self._op("reboot", vm_id)
        if self._need(vm_id) != PowerState.running:
            raise InvalidState("VM is not running", vm_id=vm_id)

    async def pause(self, vm_id: str) -> None:
        await self._op("pause", vm_id)
        if self._need(vm_id) == PowerState.stopped:
            raise InvalidState("VM is stopped", vm_id=vm_id)
        self._set(vm_id, PowerState.paused)

    async def resume(self, vm_id: str) -> None:
        await self._op("resume", vm_id)
        if self._need(vm_id) == PowerState.stopped:
            raise InvalidState("VM is stopped", vm_id=vm_id)
        self._set(vm_id, PowerState.running)

    async def power_state(self, vm_id: str) -> PowerState:
        return self.states.get(vm_id, PowerState.absent)

    async def list_vms(self) -> dict[str, PowerState]:
        return dict(self.states)

    async def describe(self, vm_id: str) -> dict[str, object]:
        self._need(vm_id)
        spec, disk_path = self.specs[vm_id]
        return {"cpus": spec.cpus, "memory_mb": spec.memory_mb, "disk_path": disk_path}


class FakeVolumes:
    """Disks as files under ``root``; the base image is fetched once per image id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fetched: list[str] = []

    def disk_path(self, vm_id: str) -> str:
        return str(self.root / f"{vm_id}.qcow2")

    async def create_vm_disk(
        self, vm_id: str, image: ImageRef, size_gb: int, fetch: Fetcher
    ) -> str:
        path = Path(self.disk_path(vm_id))
        base = self.root / f"base-{image.id}"
        if _exists(path):
            return str(path)
        if not _exists(base):
            _mkdir(self.root)
            await fetch(image, base)
            self.fetched.append(image.id)
        _write(path, b"overlay of " + _read(base)[:16])
        return str(path)

    async def delete_vm_disk(self, vm_id: str) -> None:
        _unlink(Path(self.disk_path(vm_id)))

    async def capacity_gb(self) -> tuple[float, float]:
        return (100.04, 42.26)


def spec(vm_id: str = "vm-1", *, cpus: int = 1, memory_mb: int = 512) -> VmSpec:
    return VmSpec(
        vm_id=vm_id, name=vm_id, cpus=cpus, memory_mb=memory_mb, disk_gb=10, vnc_password="pw"
    )


def _exists(path: Path) -> bool:
    return path.exists()


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
