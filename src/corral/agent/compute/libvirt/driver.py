"""``LibvirtDriver``: the ComputeDriver on libvirt/QEMU (KVM when it really works, TCG otherwise)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from corral.agent import configdrive
from corral.agent.compute.driver import Capabilities, EventSink
from corral.agent.compute.libvirt import cdrom as cdrom_ops
from corral.agent.compute.libvirt import domains
from corral.agent.compute.libvirt.connection import Connection
from corral.agent.compute.libvirt.disk_ops import LibvirtDiskOps
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.facts import host_facts
from corral.agent.compute.libvirt.naming import vm_id_of
from corral.agent.compute.libvirt.nic_ops import LibvirtNicOps
from corral.agent.compute.libvirt.probe import DEFAULT_TIMEOUT, probe_kvm
from corral.agent.compute.libvirt.secrets import ensure_secret
from corral.agent.compute.libvirt.states import event_power_state
from corral.agent.compute.libvirt.vm_snapshot import LibvirtVmSnapshots
from corral.agent.compute.libvirt.xml.compose import console_log_path, vm_domain
from corral.agent.compute.libvirt.xml.parse import parse_domain
from corral.agent.storage.backend import DiskSource
from corral.api.agent import DataDisk, VmEvent, VmSpec
from corral.api.errors import DriverError, InvalidState
from corral.api.hosts import HostFacts
from corral.api.vms import PowerState

log = logging.getLogger(__name__)
T = TypeVar("T")

_OFF = (PowerState.stopped, PowerState.crashed)


class LibvirtDriver(LibvirtDiskOps, LibvirtNicOps, LibvirtVmSnapshots):
    """Runs Corral VMs as libvirt domains named ``corral-<vm_id>`` on ``uri``.

    Data volumes: see ``LibvirtDiskOps``; NICs (taps on Open vSwitch): see ``LibvirtNicOps``;
    whole-VM snapshots and memory restores: see ``LibvirtVmSnapshots``. Every libvirt call runs
    in a worker thread (``asyncio.to_thread``); lifecycle events arrive on libvirt's event
    thread and are handed to the sink on the event loop that called ``open``.
    The connection is opened on first use and reopened after libvirtd drops it. Whether KVM works
    is probed once (by booting a throwaway guest, ~2-5 s) unless ``kvm`` is given, and cached.
    Config drives (``VmSpec.config_drive``) are ISO files ``<config_drive_dir>/<vm_id>.iso``
    (default: ``configdrive`` next to ``console_dir``), made by ``define`` from the spec and
    removed by ``undefine`` (see ``corral.agent.configdrive``).
    """

    capabilities = Capabilities(name="libvirt", live_resize=False, pause=True)

    def __init__(
        self,
        *,
        console_dir: Path,
        disk_root: Path,
        uri: str = "qemu:///system",
        kvm: bool | None = None,
        machine: str = "pc",
        probe_timeout: float = DEFAULT_TIMEOUT,
        reboot_timeout: float = 60.0,
        poll_interval: float = 0.2,
        config_drive_dir: Path | None = None,
    ) -> None:
        self.uri = uri
        self.console_dir = console_dir
        self.config_drive_dir = (
            config_drive_dir if config_drive_dir is not None else console_dir.parent / "configdrive"
        )
        self.disk_root = disk_root
        self.machine = machine
        self._kvm = kvm
        self._probe_timeout = probe_timeout
        self._reboot_timeout = reboot_timeout
        self._poll = poll_interval
        self._conn = Connection(uri, on_lifecycle=self._on_lifecycle, on_reboot=self._on_reboot)
        self._events: EventSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._probe_lock = asyncio.Lock()
        self._reboots: dict[str, asyncio.Event] = {}

    # -- plumbing -------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` in a worker thread; once more if the connection broke under it
        (every operation is idempotent, and ``fn`` looks its domain up again)."""
        self._loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(fn, *args)
        except DriverError:
            if not self._conn.broken():
                raise
            log.warning("libvirt connection broke during a call; retrying on a new one")
            return await asyncio.to_thread(fn, *args)

    def _on_lifecycle(self, name: str, event: int, detail: int) -> None:
        vm_id, mapped = vm_id_of(name), event_power_state(event, detail)
        sink, loop = self._events, self._loop
        if vm_id is None or mapped is None or sink is None or loop is None:
            return
        state, reason = mapped
        vm_event = VmEvent(vm_id=vm_id, power_state=state, reason=reason, at=datetime.now(UTC))
        self._call_soon(loop, self._deliver, sink, vm_event)

    def _on_reboot(self, name: str) -> None:
        vm_id, loop = vm_id_of(name), self._loop
        if vm_id is not None and loop is not None:
            self._call_soon(loop, self._rebooted, vm_id)

    @staticmethod
    def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    @staticmethod
    def _deliver(sink: EventSink, event: VmEvent) -> None:
        try:
            sink(event)
        except Exception:
            log.exception("event sink failed on %s", event)

    def _rebooted(self, vm_id: str) -> None:
        waiter = self._reboots.get(vm_id)
        if waiter is not None:
            waiter.set()

    # -- lifecycle of the driver -----------------------------------------------------------------

    async def open(self, events: EventSink) -> None:
        """Prepare the console directory, connect and start delivering events to ``events``."""
        self._events = events
        self._loop = asyncio.get_running_loop()
        await self._run(self._prepare_console_dir)
        await self._run(self._conn.get)

    async def close(self) -> None:
        """Stop delivering events and close the connection; VMs keep running."""
        self._events = None
        await asyncio.to_thread(self._conn.close)

    def _prepare_console_dir(self) -> None:
        # libvirt opens the log files itself (as root) and hands QEMU the descriptors, so QEMU
        # (libvirt-qemu) needs no access to this directory (verified with a 0700 root dir).
        self.console_dir.mkdir(parents=True, exist_ok=True)

    async def kvm_usable(self) -> bool:
        """Whether VMs run under KVM here (probed once, then cached)."""
        if self._kvm is None:
            async with self._probe_lock:
                if self._kvm is None:
                    timeout = self._probe_timeout
                    self._kvm = await self._run(
                        lambda: probe_kvm(self._conn.get(), timeout=timeout)
                    )
                    log.info("KVM usable: %s", self._kvm)
        return self._kvm

    async def facts(self) -> HostFacts:
        kvm = await self.kvm_usable()
        return await self._run(
            lambda: host_facts(self._conn.get(), disk_root=self.disk_root, kvm_usable=kvm)
        )

    # -- VMs -------------------------------------------------------------------------------------

    async def define(
        self,
        spec: VmSpec,
        disk_path: str | None,
        disks: Sequence[tuple[DataDisk, DiskSource]] = (),
        cdrom: str | None = None,
    ) -> None:
        """Define or redefine (root disk, then the data ``disks``, their pools' secrets set
        first, then the CD-ROM drive with ``cdrom``, then the config drive of
        ``spec.config_drive``); a running VM keeps running and gets the new definition at its
        next start, but its CPUs and memory cannot change (``InvalidState``).

        The config drive's ISO is built from the spec before the domain is defined and put in
        place (atomically) once it is, unless the file already holds it; a spec without one
        removes the file. A failed define leaves the old ISO (if any) as it was."""
        kvm = await self.kvm_usable()
        drive = spec.config_drive
        iso = configdrive.iso_path(self.config_drive_dir, spec.vm_id)
        xml = vm_domain(
            spec,
            disk_path=disk_path,
            console_dir=self.console_dir,
            kvm=kvm,
            machine=self.machine,
            disks=disks,
            cdrom=cdrom,
            config_iso=str(iso) if drive is not None else None,
        ).to_xml()
        auths = {source.auth for _, source in disks if source.auth is not None}

        def define() -> None:
            self._prepare_console_dir()
            conn = self._conn.get()
            for auth in auths:
                ensure_secret(conn, auth)
            dom = domains.lookup(conn, spec.vm_id)
            if dom is not None:
                domains.check_resize(
                    dom, vm_id=spec.vm_id, cpus=spec.cpus, memory_mb=spec.memory_mb
                )
            staged = None
            if drive is not None:
                configdrive.prepare_dir(self.config_drive_dir)
                staged = configdrive.stage_iso(drive, iso)
            try:
                with libvirt_errors(vm_id=spec.vm_id):
                    conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            except BaseException:
                if staged is not None:
                    staged.unlink(missing_ok=True)
                raise
            if staged is not None:
                configdrive.commit_iso(staged, iso)
            elif drive is None:
                configdrive.remove_iso(iso)

        await self._run(define)

    async def set_cdrom(self, vm_id: str, path: str | None) -> None:
        """Insert or eject the CD-ROM medium (see ``cdrom.change_medium``)."""
        await self._run(lambda: cdrom_ops.change_medium(self._dom(vm_id), vm_id=vm_id, path=path))

    async def undefine(self, vm_id: str) -> None:
        """Power off if needed, undefine, delete the console log and the config drive. Absent is
        success."""
        await self._run(lambda: domains.undefine(self._conn.get(), vm_id))
        await self._run(lambda: console_log_path(self.console_dir, vm_id).unlink(missing_ok=True))
        await self._run(
            lambda: configdrive.remove_iso(configdrive.iso_path(self.config_drive_dir, vm_id))
        )

    async def start(self, vm_id: str) -> None:
        await self._run(lambda: domains.start(self._dom(vm_id), vm_id=vm_id))

    async def stop(self, vm_id: str, *, force: bool, timeout: float) -> None:
        """ACPI power button, then poll every ``poll_interval`` until off; power off after
        ``timeout`` (or at once with ``force``). A paused VM is resumed first so that its guest
        can handle the button. ``NotFound`` if the VM is not defined."""
        state = await self._run(self._vm_state, vm_id)
        if state in _OFF:
            return
        if not force:
            await self._run(lambda: domains.request_shutdown(self._dom(vm_id), vm_id=vm_id))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                if await self._run(self._vm_state, vm_id) in _OFF:
                    return
                await asyncio.sleep(self._poll)
            log.info("VM %s ignored ACPI shutdown for %.1f s; powering off", vm_id, timeout)
        await self._run(lambda: domains.destroy(self._dom(vm_id), vm_id=vm_id))

    def _dom(self, vm_id: str) -> Any:
        return domains.require(self._conn.get(), vm_id)

    def _vm_state(self, vm_id: str) -> PowerState:
        state = domains.state_of(self._dom(vm_id))
        return PowerState.stopped if state == PowerState.absent else state

    async def reboot(self, vm_id: str) -> None:
        """ACPI reboot (the guest shuts down, libvirt resets and resumes it); a reset if the
        guest has not rebooted within ``reboot_timeout``. ``InvalidState`` unless running."""

        def request() -> None:
            dom = self._dom(vm_id)
            if domains.state_of(dom) != PowerState.running:
                raise InvalidState("only a running VM can be rebooted", vm_id=vm_id)
            with libvirt_errors(vm_id=vm_id):
                dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)

        waiter = self._reboots.setdefault(vm_id, asyncio.Event())
        waiter.clear()
        try:
            await self._run(request)
            try:
                await asyncio.wait_for(waiter.wait(), self._reboot_timeout)
            except TimeoutError:
                log.info("VM %s ignored ACPI reboot; resetting", vm_id)
                await self._run(self._reset, vm_id)
        finally:
            self._reboots.pop(vm_id, None)

    def _reset(self, vm_id: str) -> None:
        dom = self._dom(vm_id)
        with libvirt_errors(vm_id=vm_id):
            dom.reset(0)

    async def pause(self, vm_id: str) -> None:
        await self._run(lambda: domains.set_paused(self._dom(vm_id), vm_id=vm_id, paused=True))

    async def resume(self, vm_id: str) -> None:
        await self._run(lambda: domains.set_paused(self._dom(vm_id), vm_id=vm_id, paused=False))

    async def power_state(self, vm_id: str) -> PowerState:
        return await self._run(lambda: domains.vm_power_state(self._conn.get(), vm_id))

    async def list_vms(self) -> dict[str, PowerState]:
        return await self._run(lambda: domains.corral_vms(self._conn.get()))

    async def describe(self, vm_id: str) -> dict[str, object]:
        """vm_id, name, cpus, memory_mb, disk_path (the root disk), volumes (the data volume
        ids, sorted), nics (the NIC ids, sorted), cdrom (the ISO in the drive), config_drive
        (whether the VM has a config drive), boot (the boot order), vnc_port (None unless
        running), domain_type, power_state and console_log, from the live definition."""

        def describe() -> dict[str, object]:
            dom = self._dom(vm_id)
            with libvirt_errors(vm_id=vm_id):
                facts = parse_domain(dom.XMLDesc(0))
            return {
                "vm_id": facts.vm_id or vm_id,
                "name": facts.name,
                "cpus": facts.cpus,
                "memory_mb": facts.memory_mb,
                "disk_path": facts.disk_path,
                "volumes": sorted(d.volume_id for d in facts.data_disks),
                "nics": sorted(n.nic_id for n in facts.nics),
                "cdrom": facts.cdrom,
                "config_drive": facts.config_drive is not None,
                "boot": list(facts.boot),
                "vnc_port": facts.vnc_port,
                "domain_type": facts.domain_type,
                "power_state": domains.state_of(dom).value,
                "console_log": str(console_log_path(self.console_dir, vm_id)),
            }

        return await self._run(describe)
