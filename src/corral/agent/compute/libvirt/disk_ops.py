"""The data-volume half of ``LibvirtDriver``: attach, detach, live grow, I/O limits, live
external snapshots and block pulls.

Blocking work is in ``disks`` (run in worker threads through the driver's ``_run``); this class
adds the waiting (a hot-unplug polls the live definition until the guest released the disk, a
block pull polls its job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from corral.agent.compute.libvirt import disks as data_disks
from corral.agent.compute.libvirt import domains
from corral.agent.compute.libvirt.connection import Connection
from corral.agent.compute.libvirt.errors import libvirt_errors
from corral.agent.compute.libvirt.secrets import ensure_secret
from corral.agent.compute.libvirt.unplug import unplug
from corral.agent.compute.libvirt.xml.compose import data_disk, disk_alias, iotune
from corral.agent.compute.libvirt.xml.parse import parse_domain
from corral.agent.compute.libvirt.xml.util import render
from corral.agent.storage.backend import DiskAuth, DiskSource
from corral.api.agent import DataDisk
from corral.api.errors import DriverError, InvalidInput
from corral.api.vms import PowerState
from corral.api.volumes import VolumeQos

T = TypeVar("T")
log = logging.getLogger(__name__)

MIB = 1 << 20


class LibvirtDiskOps:
    """Data volumes of Corral's domains, found by their alias ``ua-vol-<volume_id>``."""

    _conn: Connection
    _poll: float
    pull_min_timeout: float = 120.0
    """Seconds a block pull may take whatever the size ..."""
    pull_rate: float = 16.0 * MIB
    """... plus one second per this many bytes of the disk's virtual size."""

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _dom(self, vm_id: str) -> Any:
        raise NotImplementedError

    async def power_state(self, vm_id: str) -> PowerState:
        raise NotImplementedError

    def _dom_or_none(self, vm_id: str) -> Any | None:
        return domains.lookup(self._conn.get(), vm_id)

    async def attach_disk(self, vm_id: str, disk: DataDisk, source: DiskSource) -> None:
        """Add the volume's disk to the persistent definition and hot-plug it if QEMU runs
        (running or paused); the pool's secret is set first. Attached is success; ``NotFound``
        if the VM is not defined, ``InvalidState`` if another disk holds ``disk.device``."""
        xml = render(data_disk(disk, source).element())
        volume_id = disk.volume.volume_id
        auth: DiskAuth | None = source.auth

        def attach() -> None:
            dom = self._dom(vm_id)
            if auth is not None:
                ensure_secret(self._conn.get(), auth)
            data_disks.attach(dom, vm_id=vm_id, volume_id=volume_id, device=disk.device, xml=xml)

        await self._run(attach)

    async def detach_disk(self, vm_id: str, volume_id: str, timeout: float) -> None:
        """Hot-unplug the disk if QEMU has it, waiting up to ``timeout`` s (polling the live
        definition) for the guest to release it, then remove it from the persistent definition.
        If the guest keeps it: ``InvalidState`` ("the guest did not release the disk"), the
        persistent definition untouched (the unplug request stays pending: a later detach
        finishes once the guest lets go). Not attached, or VM not defined, is success."""
        disk_alias(volume_id)  # InvalidInput for an unusable id, before anything happens

        def request() -> bool:
            dom = self._dom_or_none(vm_id)
            if dom is None:
                return False
            return data_disks.request_unplug(dom, vm_id=vm_id, volume_id=volume_id)

        def plugged() -> bool:
            dom = self._dom_or_none(vm_id)
            return dom is not None and data_disks.plugged(dom, vm_id=vm_id, volume_id=volume_id)

        def remove() -> None:
            dom = self._dom_or_none(vm_id)
            if dom is not None:
                data_disks.remove_config(dom, vm_id=vm_id, volume_id=volume_id)

        await unplug(
            self._run,
            lambda: self.power_state(vm_id),
            request=request,
            plugged=plugged,
            remove=remove,
            what="disk",
            timeout=timeout,
            poll=self._poll,
            vm_id=vm_id,
            volume_id=volume_id,
        )

    async def resize_disk(self, vm_id: str, volume_id: str, size_bytes: int) -> None:
        """Grow the plugged disk live (``blockResize``); at least that size is success.
        ``InvalidState`` unless QEMU runs the VM, ``NotFound`` if the disk is not plugged."""

        def grow() -> None:
            dom = self._dom(vm_id)
            data_disks.grow(dom, vm_id=vm_id, volume_id=volume_id, size_bytes=size_bytes)

        await self._run(grow)

    async def set_disk_qos(self, vm_id: str, volume_id: str, qos: VolumeQos) -> None:
        """Set the disk's I/O limits, live if QEMU runs and in the persistent definition.
        ``NotFound`` if the VM or the disk is not there."""
        tune = iotune(qos)

        def apply() -> None:
            dom = self._dom(vm_id)
            data_disks.set_iotune(dom, vm_id=vm_id, volume_id=volume_id, tune=tune)

        await self._run(apply)

    async def disk_file(self, vm_id: str, volume_id: str) -> str | None:
        """The data volume's source (file path, or network name) in the live definition while
        QEMU runs, else in the persistent one."""

        def find() -> str | None:
            with libvirt_errors(vm_id=vm_id):
                facts = parse_domain(self._dom(vm_id).XMLDesc(0))
            disk = facts.data_disk(volume_id)
            return disk.source if disk is not None else None

        return await self._run(find)

    async def snapshot_disk(
        self, vm_id: str, volume_id: str, new_source: DiskSource, quiesce: bool
    ) -> None:
        """A disk-only external snapshot into the existing overlay ``new_source`` (file disks
        only: ``InvalidInput`` for a network source), then the persistent definition pointed at
        it without an explicit backing chain (see ``disks``)."""
        path = _file_path(new_source, vm_id, volume_id)

        def snap() -> None:
            dom = self._dom(vm_id)
            data_disks.snapshot(dom, vm_id=vm_id, volume_id=volume_id, path=path, quiesce=quiesce)

        await self._run(snap)

    async def block_pull(self, vm_id: str, volume_id: str, base: DiskSource | None) -> None:
        """``blockRebase`` of the active file onto ``base`` (no copy mode: a pull), polled with
        ``blockJobInfo`` until done; a job already running on the disk (an earlier call cut
        short) is waited for first. The deadline is ``pull_min_timeout`` plus the disk's size
        at ``pull_rate``; after it the job is aborted (``DriverError``). The result is checked
        in the live chain (a failed job also just disappears)."""
        base_path = _file_path(base, vm_id, volume_id) if base is not None else None

        def state() -> tuple[str, bool, bool, int]:
            dom = self._dom(vm_id)
            return data_disks.pull_state(dom, vm_id=vm_id, volume_id=volume_id, base=base_path)

        target, running, done, size = await self._run(state)
        if done and not running:
            await self._run(self._pulled, vm_id, volume_id, base_path)
            return
        if not running:
            await self._run(
                lambda: data_disks.start_pull(
                    self._dom(vm_id),
                    vm_id=vm_id,
                    volume_id=volume_id,
                    target=target,
                    base=base_path,
                )
            )
        await self._wait_job(vm_id, target, size, f"volume {volume_id}", volume_id=volume_id)
        await self._run(self._pulled, vm_id, volume_id, base_path)

    async def flatten_root(self, vm_id: str) -> None:
        """Block pull of the live VM's root disk (``vda``) onto nothing: everything its backing
        chain holds is copied into the active file, which then stands alone. Standalone already
        is success. Polled and time-bounded like ``block_pull``."""

        def state() -> tuple[bool, bool, int]:
            return data_disks.root_pull_state(self._dom(vm_id), vm_id=vm_id)

        running, standalone, size = await self._run(state)
        if standalone and not running:
            return
        if not running:
            await self._run(
                lambda: data_disks.start_pull(
                    self._dom(vm_id), vm_id=vm_id, volume_id="", target=ROOT_TARGET, base=None
                )
            )
        await self._wait_job(vm_id, ROOT_TARGET, size, "the root disk", volume_id="")
        _, standalone, _ = await self._run(state)
        if not standalone:
            raise DriverError(
                "the block pull of the root disk ended but the disk still has a backing file",
                vm_id=vm_id,
            )

    async def copy_root(self, vm_id: str, dest: Path) -> None:
        """A full block copy of the live root disk (``vda``) into ``dest`` (libvirt
        ``blockCopy``, a transient job: the domain stays persistent), cancelled without pivot
        once it is in step: QEMU leaves ``dest`` a consistent copy of that moment. Bounded like
        a block pull; on any failure the job is aborted and ``dest`` removed."""

        def start() -> int:
            dom = self._dom(vm_id)
            _, _, size = data_disks.root_pull_state(dom, vm_id=vm_id)
            data_disks.start_copy(dom, vm_id=vm_id, target=ROOT_TARGET, dest=str(dest))
            return size

        size = await self._run(start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.pull_min_timeout + size / self.pull_rate
        try:
            delay = FIRST_POLL_S
            while not await self._run(lambda: data_disks.copy_ready(self._dom(vm_id), vm_id)):
                if loop.time() >= deadline:
                    raise DriverError(
                        "the copy of the root disk did not get in step in time", vm_id=vm_id
                    )
                await asyncio.sleep(delay)
                delay = min(self._poll, delay * 2)
            await self._run(
                lambda: data_disks.abort_job(
                    self._dom(vm_id), vm_id=vm_id, volume_id="", target=ROOT_TARGET
                )
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._run(
                    lambda: data_disks.abort_job(
                        self._dom(vm_id), vm_id=vm_id, volume_id="", target=ROOT_TARGET
                    )
                )
            dest.unlink(missing_ok=True)  # noqa: ASYNC240 (one unlink on failure)
            raise

    async def _wait_job(
        self, vm_id: str, target: str, size: int, what: str, *, volume_id: str
    ) -> None:
        """Poll the disk's block job until it is gone; past ``pull_min_timeout`` plus ``size``
        at ``pull_rate`` it is aborted and ``DriverError`` raised."""
        timeout = self.pull_min_timeout + size / self.pull_rate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def job() -> bool:
            dom = self._dom(vm_id)
            return data_disks.job_running(dom, vm_id=vm_id, volume_id=volume_id, target=target)

        delay = FIRST_POLL_S  # short jobs end quickly: poll fast first, then every ``_poll``
        while await self._run(job):
            if loop.time() >= deadline:
                try:
                    await self._run(
                        lambda: data_disks.abort_job(
                            self._dom(vm_id), vm_id=vm_id, volume_id=volume_id, target=target
                        )
                    )
                except DriverError as exc:
                    log.error("vm %s: cannot abort the pull of %s: %s", vm_id, what, exc)
                raise DriverError(
                    f"the block pull of {what} did not finish within {timeout:.0f} s and was"
                    " cancelled",
                    vm_id=vm_id,
                    volume_id=volume_id,
                    timeout=timeout,
                )
            await asyncio.sleep(delay)
            delay = min(self._poll, delay * 2)

    def _pulled(self, vm_id: str, volume_id: str, base: str | None) -> None:
        data_disks.pulled(self._dom(vm_id), vm_id=vm_id, volume_id=volume_id, base=base)


ROOT_TARGET = "vda"
"""The root disk's target device in Corral's domains."""
FIRST_POLL_S = 0.01
"""The first wait between two looks at a block job (doubling up to the driver's poll interval)."""


def _file_path(source: DiskSource, vm_id: str, volume_id: str) -> str:
    if source.kind != "file" or not source.path:
        raise InvalidInput(
            "external snapshots and block pulls are only supported on file volumes here",
            vm_id=vm_id,
            volume_id=volume_id,
            kind=source.kind,
            protocol=source.protocol,
        )
    return source.path
