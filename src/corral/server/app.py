"""Composition root of the server: builds the services, the FastAPI app and the HTTP listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI

from corral import __version__
from corral.server.agents import host_tokens
from corral.server.agents.client import AgentClient
from corral.server.db.engine import make_engine, make_sessionmaker, migrate
from corral.server.http import (
    audit_mw,
    errors,
    routes_agent,
    routes_audit,
    routes_auth,
    routes_cdrom,
    routes_identity,
    routes_networks,
    routes_nics,
    routes_ops,
    routes_recycle,
    routes_resources,
    routes_security_groups,
    routes_snapshots,
    routes_storage,
    routes_tags,
    routes_vms,
    routes_volumes,
)
from corral.server.http.agent_fast import AgentFastPath
from corral.server.http.idempotency import Idempotency
from corral.server.identity.directory import ensure_identity
from corral.server.secretbox import SecretBox, load_master_keys
from corral.server.security.ratelimit import RateLimiter
from corral.server.services import auth, hosts, recycle, snapshot_schedule
from corral.server.services.context import Services
from corral.server.services.operations import OperationRunner
from corral.server.settings import ServerSettings
from corral.server.workflows.engine import WorkflowEngine
from corral.server.workflows.host_add import HOST_ADD
from corral.server.workflows.image_capture import IMAGE_CAPTURE
from corral.server.workflows.image_import import IMAGE_IMPORT
from corral.server.workflows.image_publish import IMAGE_PUBLISH
from corral.server.workflows.pool_delete import POOL_DELETE
from corral.server.workflows.snapshot_create import SNAPSHOT_CREATE
from corral.server.workflows.snapshot_delete import SNAPSHOT_DELETE
from corral.server.workflows.snapshot_revert import SNAPSHOT_REVERT
from corral.server.workflows.vm_cdrom import VM_BOOT_ORDER, VM_CDROM
from corral.server.workflows.vm_clone import VM_CLONE
from corral.server.workflows.vm_create import VM_CREATE
from corral.server.workflows.vm_delete import VM_DELETE
from corral.server.workflows.vm_nic import VM_NIC_ADD, VM_NIC_REMOVE
from corral.server.workflows.vm_power import VM_POWER
from corral.server.workflows.vm_recycle import VM_RECYCLE
from corral.server.workflows.vm_resize import VM_RESIZE
from corral.server.workflows.vm_snapshot_create import VM_SNAPSHOT_CREATE
from corral.server.workflows.vm_snapshot_delete import VM_SNAPSHOT_DELETE
from corral.server.workflows.vm_snapshot_revert import VM_SNAPSHOT_REVERT
from corral.server.workflows.volume_attach import VOLUME_ATTACH
from corral.server.workflows.volume_clone import VOLUME_CLONE
from corral.server.workflows.volume_delete import VOLUME_DELETE
from corral.server.workflows.volume_detach import VOLUME_DETACH
from corral.server.workflows.volume_move import VOLUME_MOVE
from corral.server.workflows.volume_qos import VOLUME_QOS
from corral.server.workflows.volume_resize import VOLUME_RESIZE
from corral.util.ca import ClusterCA
from corral.util.redact import install_log_redaction
from corral.util.serving import Listener, start_listener
from corral.util.tls import check_cert_and_key, ensure_self_signed, pkcs12_to_pem

log = logging.getLogger(__name__)

MONITOR_INTERVAL_S = 2.0


def create_app(svc: Services | None = None) -> FastAPI:
    """The FastAPI app. ``svc`` may be attached later (``app.state.services``)."""
    app = FastAPI(
        title="Corral",
        version=__version__,
        description="KVM virtualization management: REST API. Every mutating call returns 202 "
        "and an Operation; follow it at /api/v1/operations/{id}?wait=SECONDS.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    api = APIRouter(prefix="/api/v1")
    for r in (routes_auth.router, routes_ops.router, routes_resources.router, routes_vms.router):
        api.include_router(r)
    api.include_router(routes_agent.router)
    api.include_router(routes_agent.debug)
    api.include_router(routes_identity.router)
    api.include_router(routes_auth.keys)
    api.include_router(routes_audit.router)
    api.include_router(routes_storage.router)
    api.include_router(routes_volumes.router)
    api.include_router(routes_nics.router)
    api.include_router(routes_snapshots.router)
    api.include_router(routes_networks.router)
    api.include_router(routes_security_groups.router)
    api.include_router(routes_recycle.router)
    api.include_router(routes_tags.router)
    api.include_router(routes_cdrom.router)
    app.include_router(api)
    errors.install(app)
    app.add_middleware(Idempotency, services=lambda: app.state.services)
    audit_mw.install(app)  # app.state.audit: the audit log writer
    app.add_middleware(AgentFastPath, services=lambda: app.state.services)
    app.state.services = svc
    return app


async def build_services(settings: ServerSettings) -> Services:
    """Create the data directory, connect to the database, apply migrations and seal the secrets
    an older version stored in plain text (migrations have no master key)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.image_dir.mkdir(parents=True, exist_ok=True)
    db = make_engine(settings.db_url)
    await migrate(db)
    box = SecretBox(load_master_keys(data_dir=settings.data_dir))
    await host_tokens.seal_plain_tokens(db, box)
    sm = make_sessionmaker(db)
    agents = AgentClient(
        callback_base=settings.callback_base,
        poll_interval=settings.agent_poll_interval_s,
        task_timeout=settings.agent_task_timeout_s,
    )
    engine = WorkflowEngine(sm, deps=None)
    runner = OperationRunner(sm, engine)
    runner.register(
        HOST_ADD,
        IMAGE_IMPORT,
        IMAGE_CAPTURE,
        IMAGE_PUBLISH,
        VM_CLONE,
        VM_RECYCLE,
        VM_CREATE,
        VM_NIC_ADD,
        VM_NIC_REMOVE,
        VM_DELETE,
        VM_RESIZE,
        *VM_POWER.values(),
        VOLUME_ATTACH,
        VOLUME_DETACH,
        VOLUME_RESIZE,
        VOLUME_DELETE,
        VOLUME_MOVE,
        VOLUME_CLONE,
        VOLUME_QOS,
        SNAPSHOT_CREATE,
        SNAPSHOT_REVERT,
        SNAPSHOT_DELETE,
        VM_SNAPSHOT_CREATE,
        VM_SNAPSHOT_REVERT,
        VM_SNAPSHOT_DELETE,
        VM_CDROM,
        VM_BOOT_ORDER,
        POOL_DELETE,
    )
    svc = Services(
        settings=settings,
        db=db,
        sessionmaker=sm,
        engine=engine,
        runner=runner,
        agents=agents,
        secrets=box,
        expensive_limiter=RateLimiter(settings.expensive_rate_per_s, settings.expensive_burst),
    )
    engine.deps = svc
    return svc


@dataclass
class ServerHandle:
    """A running server: its services, app and background tasks."""

    settings: ServerSettings
    services: Services
    app: FastAPI
    admin_password: str | None
    listener: Listener | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.settings.scheme}://127.0.0.1:{self.settings.port}"

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.services.runner.drain(timeout=2)
        await self.services.agents.close()
        await self.app.state.audit.close()
        await self.services.db.dispose()


async def _monitor(svc: Services) -> None:
    while True:
        await asyncio.sleep(MONITOR_INTERVAL_S)
        try:
            n = await hosts.mark_silent_hosts(svc=svc)
            if n:
                log.warning("%d host(s) stopped sending heartbeats: marked disconnected", n)
        except Exception:
            log.exception("host monitor failed")


async def _snapshot_scheduler(svc: Services) -> None:
    while True:
        await asyncio.sleep(snapshot_schedule.TICK_S)
        try:
            await snapshot_schedule.run_due(svc)
        except Exception:
            log.exception("snapshot scheduler failed")


async def start(settings: ServerSettings, *, listen: bool = True) -> ServerHandle:
    """Start a server: scrub secrets from every log record (``install_log_redaction``), migrate,
    create the admin at first start (its password is returned, never logged), recover interrupted
    workflows, start the host monitor and (if ``listen``) the HTTP(S) listener. Returns once it
    listens."""
    install_log_redaction()
    svc = await build_services(settings)
    password = await auth.ensure_admin(svc=svc)
    await ensure_identity(svc.sessionmaker)
    app = create_app(svc)
    handle = ServerHandle(settings=settings, services=svc, app=app, admin_password=password)
    recovered = await svc.runner.recover()
    if recovered:
        log.warning("recovering %d interrupted operation(s)", recovered)
    handle._tasks.append(asyncio.create_task(_monitor(svc), name="host-monitor"))
    handle._tasks.append(asyncio.create_task(_snapshot_scheduler(svc), name="snapshot-scheduler"))
    handle._tasks.append(asyncio.create_task(recycle.run_expunges(svc), name="recycle-expunges"))
    svc.agents.ca = ClusterCA.load_or_create(settings.ca_dir)  # before any agent call runs
    if listen:
        cert = key = None
        if settings.tls:
            try:  # the operator's certificate (PEM or PKCS#12), else a generated self-signed one
                if settings.pkcs12_file is not None:
                    pkcs12_to_pem(
                        settings.pkcs12_file,
                        settings.pkcs12_password,
                        cert_out=settings.cert_path,
                        key_out=settings.key_path,
                    )
                elif settings.cert_file is None:
                    ensure_self_signed(settings.cert_path, settings.key_path, "corral-server")
                check_cert_and_key(settings.cert_path, settings.key_path)
            except BaseException:
                await handle.stop()
                raise
            cert, key = settings.cert_path, settings.key_path
        handle.listener = await start_listener(
            app, host=settings.host, port=settings.port, cert=cert, key=key
        )
        settings.port = handle.listener.port
        svc.agents.callback_base = settings.callback_base
    return handle
