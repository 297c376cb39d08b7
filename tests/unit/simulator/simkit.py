"""Helpers for the simulator tests: VM specs and an event sink that records."""

from __future__ import annotations

from corral.api.agent import VmEvent, VmSpec


def spec(vm_id: str = "vm-1", *, cpus: int = 2, memory_mb: int = 1024, disk_gb: int = 10) -> VmSpec:
    return VmSpec(
        vm_id=vm_id,
        name=f"name-{vm_id}",
        cpus=cpus,
        memory_mb=memory_mb,
        disk_gb=disk_gb,
        vnc_password="secret",
    )


class Recorder:
    """An event sink that keeps (vm_id, power_state, reason) tuples."""

    def __init__(self) -> None:
        self.events: list[VmEvent] = []

    def __call__(self, event: VmEvent) -> None:
        self.events.append(event)

    def seen(self) -> list[tuple[str, str, str]]:
        return [(e.vm_id, e.power_state.value, e.reason) for e in self.events]

    def clear(self) -> None:
        self.events.clear()
