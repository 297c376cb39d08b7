"""Build the agent's ASGI app: one host at ``/``, or many simulated hosts under ``/sim/<i>``."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.agent.http import enroll
from corral.agent.http.errors import install_error_handlers
from corral.agent.http.fast import is_task_submit, serve_task
from corral.agent.http.routes import RUNTIME_KEY, router
from corral.agent.runtime import HostRuntime, agent_version
from corral.api.common import Model


class RootHealth(Model):
    status: str = "ok"
    version: str
    hosts: list[str]


def create_host_app(runtime: HostRuntime | None) -> FastAPI:
    """The API of one host, or (``None``) of whichever host ``RUNTIME_KEY`` in the request's scope
    names. The app does not start or stop the runtime: its owner does."""
    name = runtime.name if runtime is not None else "simulated hosts"
    app = FastAPI(title=f"Corral agent ({name})", version=agent_version())
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(enroll.router)
    return app


class _Dispatcher:
    """ASGI app: requests under a runtime's prefix go to the shared host app with that runtime (as
    a Starlette mount would, ``root_path`` extended), anything else to the root app. A dict lookup
    per request, whatever the number of hosts (1,000 mounts would be tried one by one).
    ``POST <prefix>/v1/tasks`` is answered by ``fast.serve_task``."""

    def __init__(self, root: ASGIApp, hosts: ASGIApp, runtimes: dict[str, HostRuntime]) -> None:
        self.root, self.hosts = root, hosts
        self.runtimes = {p.rstrip("/"): rt for p, rt in runtimes.items()}
        self.depths = sorted({p.count("/") for p in self.runtimes}, reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            root_path = scope.get("root_path", "")
            path: str = scope["path"]
            rest = path[len(root_path) :] if root_path and path.startswith(root_path) else path
            for depth in self.depths:
                parts = rest.split("/", depth + 1)
                prefix = "/".join(parts[: depth + 1])
                runtime = self.runtimes.get(prefix)
                if runtime is not None and len(parts) > depth:
                    if is_task_submit(scope, rest[len(prefix) :]):
                        await serve_task(runtime, scope, receive, send)
                        return
                    scope = {
                        **scope,
                        "app_root_path": scope.get("app_root_path", root_path),
                        "root_path": root_path + prefix,
                        RUNTIME_KEY: runtime,
                    }
                    await self.hosts(scope, receive, send)
                    return
        await self.root(scope, receive, send)


class _OneHost:
    """ASGI app of a host served at the root: ``POST /v1/tasks`` by ``fast.serve_task``, the rest
    by the host's FastAPI app."""

    def __init__(self, app: ASGIApp, runtime: HostRuntime) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root_path = scope.get("root_path", "")
            path: str = scope["path"]
            rest = path[len(root_path) :] if root_path and path.startswith(root_path) else path
            if is_task_submit(scope, rest):
                await serve_task(self.runtime, scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_agent_app(runtimes: dict[str, HostRuntime]) -> ASGIApp:
    """Serve ``runtimes`` by mount path: ``{"": rt}`` (or ``"/"``) serves one host at the root;
    ``{"/sim/0": rt0, "/sim/1": rt1, …}`` serves each under its prefix, with ``GET /v1/health`` at
    the root listing the prefixes."""
    if not runtimes:
        raise ValueError("no host runtime to serve")
    if len(runtimes) == 1 and next(iter(runtimes)) in ("", "/"):
        runtime = next(iter(runtimes.values()))
        return _OneHost(create_host_app(runtime), runtime)
    app = FastAPI(title="Corral agent (simulated hosts)", version=agent_version())
    install_error_handlers(app)
    prefixes = list(runtimes)

    @app.get("/v1/health")
    async def health() -> RootHealth:
        return RootHealth(version=agent_version(), hosts=prefixes)

    for prefix in runtimes:
        if prefix in ("", "/") or not prefix.startswith("/"):
            raise ValueError(f"bad mount path {prefix!r}: several hosts need /-prefixed paths")
    return _Dispatcher(app, create_host_app(None), runtimes)
