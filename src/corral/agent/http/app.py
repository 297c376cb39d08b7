"""Build the agent's ASGI app: one host at ``/``, or many simulated hosts under ``/sim/<i>``."""

from __future__ import annotations

from fastapi import FastAPI

from corral.agent.http.errors import install_error_handlers
from corral.agent.http.routes import router
from corral.agent.runtime import HostRuntime, agent_version
from corral.api.common import Model


class RootHealth(Model):
    status: str = "ok"
    version: str
    hosts: list[str]


def create_host_app(runtime: HostRuntime) -> FastAPI:
    """The API of one host. The app does not start or stop the runtime: its owner does."""
    app = FastAPI(title=f"Corral agent ({runtime.name})", version=agent_version())
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(router)
    return app


def create_agent_app(runtimes: dict[str, HostRuntime]) -> FastAPI:
    """Serve ``runtimes`` by mount path: ``{"": rt}`` (or ``"/"``) serves one host at the root;
    ``{"/sim/0": rt0, "/sim/1": rt1, …}`` serves each under its prefix, with ``GET /v1/health`` at
    the root listing the prefixes."""
    if not runtimes:
        raise ValueError("no host runtime to serve")
    if len(runtimes) == 1 and next(iter(runtimes)) in ("", "/"):
        return create_host_app(next(iter(runtimes.values())))
    app = FastAPI(title="Corral agent (simulated hosts)", version=agent_version())
    install_error_handlers(app)
    prefixes = list(runtimes)

    @app.get("/v1/health")
    async def health() -> RootHealth:
        return RootHealth(version=agent_version(), hosts=prefixes)

    for prefix, runtime in runtimes.items():
        if prefix in ("", "/") or not prefix.startswith("/"):
            raise ValueError(f"bad mount path {prefix!r}: several hosts need /-prefixed paths")
        app.mount(prefix.rstrip("/"), create_host_app(runtime))
    return app
