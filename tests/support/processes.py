"""Corral server and agent as real processes (``corral server`` / ``corral agent``) that tests can
SIGKILL and start again on the same port and data directory."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CORRAL = str(Path(sys.executable).with_name("corral"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """One ``corral`` role. ``start`` returns once ``health_url`` answers 200."""

    name: str
    argv: list[str]
    health_url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: asyncio.subprocess.Process | None = None
    starts: int = 0

    async def start(self, timeout: float = 30.0) -> None:
        assert self.popen is None, f"{self.name} is running"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start #{self.starts}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = await asyncio.create_subprocess_exec(
                *self.argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=2) as c:
            while True:
                if self.popen.returncode is not None:
                    raise AssertionError(f"{self.name} exited at start-up: see {self.log}")
                try:
                    if (await c.get(self.health_url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"{self.name} did not become healthy: see {self.log}")
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: no clean-up, no shutdown hook runs."""
        if self.popen is not None:
            self.popen.kill()
            await self.popen.wait()
            self.popen = None

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, SIGKILL if it does not exit within ``timeout`` seconds."""
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            await asyncio.wait_for(self.popen.wait(), timeout)
        except TimeoutError:
            await self.kill()
        self.popen = None


def server_process(data_dir: Path, *, admin_password: str) -> Process:
    port = free_port()
    return Process(
        name="server",
        argv=[
            *(CORRAL, "server", "--http", "--host", "127.0.0.1", "--port", str(port)),
            *("--data-dir", str(data_dir), "--log-level", "warning"),
        ],
        health_url=f"http://127.0.0.1:{port}/api/v1/health",
        log=data_dir.parent / "server.log",
        env={"CORRAL_ADMIN_PASSWORD": admin_password},
    )


def agent_process(data_dir: Path, *, sim_latency: float, fault_injection: bool = True) -> Process:
    """A simulator agent with one host, served at ``http://127.0.0.1:<port>/sim/0``."""
    port = free_port()
    return Process(
        name="agent",
        argv=[
            *(CORRAL, "agent", "--http", "--host", "127.0.0.1", "--port", str(port)),
            *("--data-dir", str(data_dir), "--driver", "simulator", "--sim-hosts", "1"),
            *("--sim-latency", str(sim_latency), "--log-level", "warning"),
            *(["--fault-injection"] if fault_injection else []),
        ],
        health_url=f"http://127.0.0.1:{port}/sim/0/v1/health",
        log=data_dir.parent / "agent.log",
    )
