"""One served host: its drivers, attachment, tasks, spec store, drift and reports to the server.

Lifecycle: ``await start()`` (load state, open the driver, reconcile, start reporting), serve
requests, ``await stop()``. Neither ever stops or destroys a VM: restarting the agent leaves running
VMs running.

Data directory layout: ``attach.json`` (0600), ``vms/<vm_id>.json`` (specs, 0600),
``tasks.sqlite3`` (task statuses), ``pools.json`` (the storage pools the server sent, 0600),
``network.json`` (the host's network state, 0600; real hosts: ``dhcp/``, the DHCP services;
``configdrive/<vm_id>.iso``, the VMs' config drives, made by the libvirt driver).

Storage pools (``corral.agent.pools``): the set is loaded at start; every
``pool_report_interval`` seconds each pool is measured and the reports handed to the heartbeater,
which sends them when they changed noticeably.

Network (``corral.agent.network.plane``): the host's ``NetworkPlane`` (optional) loads the
stored state (``network.json``) at start and is refreshed at once and every
``network_refresh_interval`` seconds in the background (failures logged); its digest goes with
every heartbeat and its tunnel IP into the facts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from corral.agent.attach import Attachment, AttachStore
from corral.agent.compute.driver import ComputeDriver
from corral.agent.executor import TaskExecutor, payload_key
from corral.agent.faults import FaultPlan
from corral.agent.heartbeat import EVENT_WINDOW_S, EventPusher, Heartbeater
from corral.agent.network.plane import NetworkPlane
from corral.agent.pools import HostPools, PoolStore
from corral.agent.reconcile import reconcile, vm_reports
from corral.agent.reporter import ServerLink
from corral.agent.specs import SpecStore
from corral.agent.storage.driver import VolumeDriver
from corral.agent.storage.volumes import Backends
from corral.agent.tasks import TaskRegistry
from corral.agent.taskstore import TaskStore
from corral.api.agent import (
    AgentTask,
    AttachRequest,
    AttachResponse,
    ImageRef,
    TaskStatus,
    VmReport,
)
from corral.api.errors import AgentError, CorralError
from corral.api.hosts import HostFacts

log = logging.getLogger(__name__)


def agent_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class HostRuntime:
    """Everything the agent does for one host (one per ``/sim/<i>`` in simulator mode).

    ``volumes`` holds the VMs' root disks, ``backends`` the data volumes by pool type (without
    any, volume tasks and VMs with data disks fail with ``InvalidInput``)."""

    def __init__(
        self,
        *,
        name: str,
        data_dir: Path,
        compute: ComputeDriver,
        volumes: VolumeDriver,
        backends: Backends | None = None,
        faults: FaultPlan | None = None,
        fault_injection: bool = False,
        heartbeat_interval: float = 2.0,
        inline_wait: float = 0.5,
        shutdown_grace: float = 10.0,
        event_window: float = EVENT_WINDOW_S,
        pool_report_interval: float = 30.0,
        startup: Sequence[Callable[[], Awaitable[None]]] = (),
        network: NetworkPlane | None = None,
        network_refresh_interval: float = 10.0,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.compute = compute
        self.volumes = volumes
        self.backends = backends if backends is not None else Backends({})
        self.faults = faults if faults is not None else FaultPlan()
        self.fault_injection = fault_injection
        self.shutdown_grace = shutdown_grace
        self.started_at = datetime.now(UTC)
        self.attachment = AttachStore(data_dir / "attach.json")
        self.specs = SpecStore(data_dir / "vms")
        self.task_store = TaskStore(data_dir / "tasks.sqlite3")
        self.tasks = TaskRegistry(
            store=self.task_store, notify=self._notify, inline_wait=inline_wait
        )
        self.drift: dict[str, list[str]] = {}
        self.pool_store = PoolStore(data_dir / "pools.json")
        self.pools = HostPools(name=name, store=self.pool_store, backends=self.backends)
        self.pool_report_interval = pool_report_interval
        self.network = network
        self.network_refresh_interval = network_refresh_interval
        self.executor = TaskExecutor(
            compute=compute,
            volumes=volumes,
            specs=self.specs,
            faults=self.faults,
            fetch=self._fetch,
            drift=self.drift,
            backends=self.backends,
            pools=self.pools,
            upload=self._upload,
            network=network,
        )
        self.link: ServerLink | None = None
        self.heartbeat = Heartbeater(
            name=name,
            interval=heartbeat_interval,
            link=lambda: self.link,
            facts=self.facts,
            vms=self.vm_reports,
            started_at=self.started_at,
            pools_digest=lambda: self.pool_store.digest,
            network_digest=lambda: self.network.digest if self.network is not None else None,
        )
        self.pools.on_reports = self.heartbeat.pool_reports
        self.events = EventPusher(name=name, link=lambda: self.link, window=event_window)
        self._startup = list(startup)
        self._background: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        """Load the attachment, specs and task records, run the ``startup`` hooks (e.g. prepare
        the disk pool), open the driver, reconcile, and start the heartbeat and event push.
        Tasks interrupted by the previous process are failed (and their callbacks sent). On
        failure everything opened so far is closed again."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        try:
            current = self.attachment.load()
            if current is not None:
                self.link = ServerLink(current, name=self.name)
            self.specs.open()
            self.pool_store.load()
            if self.network is not None:
                self.network.load()
            self.task_store.open()
            for prepare in self._startup:
                await prepare()
            interrupted = self.task_store.recover_interrupted()
            await self.compute.open(self.events.push)
        except BaseException:
            await self._close_resources()
            raise
        try:
            self.drift.update(
                await reconcile(compute=self.compute, specs=self.specs, backends=self.backends)
            )
        except CorralError as exc:
            log.error("%s: reconcile failed: %s", self.name, exc)
        self.heartbeat.start()
        self.events.start()
        self._started = True
        self._spawn(self._warm_up())
        self._spawn(self._report_pools())
        if self.network is not None:
            self._spawn(self._refresh_network())
        for status, url in interrupted:
            if url is not None:
                self._spawn(self._notify(status, url))
        log.info(
            "%s: started (%d VM specs, drift on %d)",
            self.name,
            len(self.specs.all()),
            len(self.drift),
        )

    async def stop(self) -> None:
        """Stop reporting, let running tasks finish (``shutdown_grace``), close everything."""
        if not self._started:
            return
        self._started = False
        await self.heartbeat.stop()
        await self.events.stop()
        await self.tasks.drain(self.shutdown_grace)
        for task in self._background:
            task.cancel()
        if self._background:
            await asyncio.wait(self._background)
        await self.compute.close()
        await self._close_resources()

    async def _close_resources(self) -> None:
        if self.link is not None:
            await self.link.aclose()
            self.link = None
        self.task_store.close()

    def authenticate(self, authorization: str | None) -> Attachment:
        """Check an ``Authorization`` header; ``Unauthenticated`` unless it has the host token."""
        return self.attachment.authenticate(authorization)

    async def attach(self, request: AttachRequest, *, authorization: str | None) -> AttachResponse:
        """Claim (or re-attach) this agent; see ``AttachStore.claim`` for who may."""
        attachment = self.attachment.claim(request, authorization=authorization)
        old, self.link = self.link, ServerLink(attachment, name=self.name)
        if old is not None:
            self._spawn(old.aclose())
        log.info(
            "%s: attached as host %s to %s", self.name, attachment.host_id, attachment.server_url
        )
        self.heartbeat.wake(resend_facts=True)
        return AttachResponse(facts=await self.facts(), agent_version=agent_version())

    async def facts(self) -> HostFacts:
        """The driver's facts, with disk figures taken from the VM disk pool and the tunnel IP
        from the network plane."""
        facts = await self.compute.facts()
        total, free = await self.volumes.capacity_gb()
        update: dict[str, object] = {
            "disk_gb_total": round(total, 1),
            "disk_gb_free": round(free, 1),
        }
        if self.network is not None:
            update["tunnel_ip"] = self.network.tunnel_ip
        return facts.model_copy(update=update)

    async def submit(self, task: AgentTask) -> TaskStatus:
        """Run a task once per task id (see ``TaskRegistry``)."""
        payload = task.payload
        return await self.tasks.submit(
            task, key=payload_key(payload), run=lambda: self.executor.run(payload)
        )

    def task_status(self, task_id: str) -> TaskStatus:
        return self.tasks.get(task_id)

    async def vm_reports(self) -> list[VmReport]:
        """Every VM with its power state and drift (spec store vs hypervisor)."""
        vms = await self.compute.list_vms()
        return vm_reports(vms, self.specs.all(), self.drift)

    async def _report_pools(self) -> None:
        """Measure every stored pool now and every ``pool_report_interval`` seconds; the reports
        go to the heartbeater (``HostPools.on_reports``)."""
        while True:
            try:
                await self.pools.measure()
            except Exception:
                log.exception("%s: measuring the storage pools failed", self.name)
            # +-10 % jitter: hundreds of simulated hosts do not measure in lockstep
            await asyncio.sleep(self.pool_report_interval * random.uniform(0.9, 1.1))

    def set_network(self, plane: NetworkPlane) -> None:
        """Use ``plane`` as the host's network plane from now on (tests give a simulated host
        a real one)."""
        self.network = plane
        self.executor.network = plane

    async def _refresh_network(self) -> None:
        """Refresh the network plane now and every ``network_refresh_interval`` seconds."""
        while True:
            try:
                if self.network is not None:
                    await self.network.refresh()
            except CorralError as exc:
                log.warning("%s: the network state could not be applied: %s", self.name, exc)
            except Exception:
                log.exception("%s: refreshing the network failed", self.name)
            await asyncio.sleep(self.network_refresh_interval * random.uniform(0.9, 1.1))

    async def forget_pools(self) -> None:
        """The host was removed: forget every storage pool (their credentials go with the file).
        Never raises."""
        try:
            await self.pools.sync([])
        except CorralError as exc:
            log.warning("%s: cannot forget the storage pools: %s", self.name, exc)

    async def reload_pools(self) -> None:
        """Read ``pools.json`` again (tests: a lost file) and measure at once."""
        self.pool_store.load()
        await self.pools.measure()

    async def _warm_up(self) -> None:
        """Read the facts once in the background: the first call may be slow (libvirt probes
        KVM by booting a guest) and should not delay the server's attach."""
        try:
            await self.facts()
        except CorralError as exc:
            log.warning("%s: cannot read host facts: %s", self.name, exc)

    async def _fetch(self, image: ImageRef, dest: Path) -> None:
        link = self.link
        if link is None:
            raise AgentError("agent is not attached to a server", image_id=image.id)
        await link.download(image, dest)

    async def _upload(self, path: str, source: Path) -> tuple[int, str]:
        link = self.link
        if link is None:
            raise AgentError("agent is not attached to a server", path=path)
        return await link.upload(path, source)

    async def _notify(self, status: TaskStatus, callback_url: str) -> None:
        link = self.link
        if link is None:
            log.warning("%s: not attached, callback of task %s dropped", self.name, status.task_id)
            return
        await link.task_done(status, callback_url)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
