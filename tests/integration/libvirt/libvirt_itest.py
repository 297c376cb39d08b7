"""Helpers of the libvirt integration tests: event recording, guest disks, domain cleanup."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import libvirt

from corral.agent.compute.libvirt.bootsector import READY_MARKER, write_boot_disk
from corral.agent.compute.libvirt.domains import UNDEFINE_FLAGS
from corral.api.agent import VmEvent
from corral.api.vms import PowerState


class Recorder:
    """An EventSink that keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[VmEvent] = []

    def __call__(self, event: VmEvent) -> None:
        self.events.append(event)

    def of(self, vm_id: str) -> list[VmEvent]:
        return [e for e in self.events if e.vm_id == vm_id]

    async def wait_for(self, vm_id: str, state: PowerState, *, timeout: float = 10) -> VmEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.of(vm_id):
                if event.power_state == state:
                    return event
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {state} event for {vm_id} in {timeout} s: {self.of(vm_id)}")


def qcow2(path: Path, *, size: str = "64M", backing: Path | None = None) -> Path:
    """A qcow2 disk, empty or as an overlay of ``backing`` (which is never written)."""
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        cmd += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*cmd, str(path), *([] if backing else [size])], check=True)
    path.chmod(0o666)
    return path


def boot_sector_disk(path: Path, *, poweroff_after_ticks: int = 0) -> Path:
    """A qcow2 disk booting ``bootsector``: prints GUEST-READY, obeys the ACPI power button."""
    raw = path.with_suffix(".raw")
    write_boot_disk(raw, poweroff_after_ticks=poweroff_after_ticks)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    path.chmod(0o666)
    return path


async def wait_for_log(
    path: Path, marker: str = READY_MARKER, *, count: int = 1, timeout: float = 30
) -> str:
    """Wait until ``marker`` appears ``count`` times in the serial log at ``path``."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(_read, path)
        if text.count(marker) >= count:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{marker!r} x{count} not in {path} after {timeout} s: {text[-500:]!r}")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def remove_domain(conn: Any, name: str) -> None:
    """Destroy and undefine domain ``name`` if it exists (test cleanup; never raises)."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    for step in (dom.destroy, lambda: dom.undefineFlags(UNDEFINE_FLAGS)):
        try:
            step()
        except libvirt.libvirtError:
            pass
