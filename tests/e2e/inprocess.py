"""A whole Corral (server and simulated hosts over real HTTP) in a background thread.

The stack gets its own event loop, so blocking clients (``corral.sdk.Client``, ``curl``) can talk to
it from a test exactly as a user script would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import running_stack

SIM_HOSTS = 3
"""Simulated hosts of the stack; each has the simulator's default 32 CPUs and 131072 MiB."""


@dataclass
class _Runner:
    data_dir: Path
    started: threading.Event = field(default_factory=threading.Event)
    url: str | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None
    error: BaseException | None = None

    async def serve(self) -> None:
        async with running_stack(self.data_dir, sim_hosts=SIM_HOSTS, fault_injection=False) as s:
            self.url, self.loop, self.stop = (
                s.server.url,
                asyncio.get_running_loop(),
                asyncio.Event(),
            )
            self.started.set()
            await self.stop.wait()

    def run(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:
            self.error = exc
            self.started.set()


@contextmanager
def threaded_stack(data_dir: Path) -> Iterator[str]:
    """Run the stack in a thread; yields its base URL (admin password: ``ADMIN_PASSWORD`` of
    ``tests.support.stack``). Stops it on exit and raises what it raised, if anything."""
    runner = _Runner(data_dir)
    thread = threading.Thread(target=runner.run, name="corral-stack")
    thread.start()
    runner.started.wait(60)
    assert runner.url is not None, f"the stack did not start: {runner.error!r}"
    try:
        yield runner.url
    finally:
        assert runner.loop is not None and runner.stop is not None
        runner.loop.call_soon_threadsafe(runner.stop.set)
        thread.join(30)
    if runner.error is not None:
        raise runner.error
