"""What every benchmark shares: figures and how they print, statistics, Corral processes, a client.

A benchmark module exposes ``NAME`` and ``async def run(ctx: BenchContext) -> list[Figure]``. Corral
runs as real processes (``corral server``, ``corral agent``, ``corral up``), started from the
virtualenv next to this interpreter, each in its own session so that stopping it stops its children.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CORRAL = str(Path(sys.executable).parent / "corral")


@dataclass
class Figure:
    """One measured figure, with the baseline measured in the same run and the issue's target."""

    name: str
    value: float
    unit: str
    target: str
    baseline: float | None = None
    baseline_label: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def line(self) -> str:
        parts = [f"{self.name:<34} {fmt(self.value, self.unit):>12}"]
        if self.baseline is not None:
            parts.append(f"baseline {fmt(self.baseline, self.unit)} ({self.baseline_label})")
            if self.ratio is not None:
                parts.append(f"ratio {self.ratio:.2f}x")
        parts.append(f"target {self.target}")
        if self.note:
            parts.append(self.note)
        return "  |  ".join(parts)


def fmt(value: float, unit: str) -> str:
    if unit == "s" and value < 1:
        return f"{value * 1000:.1f} ms"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


@dataclass
class BenchContext:
    """Options of this run and a scratch directory that is removed afterwards."""

    quick: bool
    workdir: Path
    log: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        print(f"  .. {message}", flush=True)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank."""
    ordered = sorted(xs)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark runner dies (no orphaned Corral processes)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Proc:
    """A Corral process (its output goes to ``<log>``); ``stop`` sends SIGTERM to its session."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the output; raises if the process exits first."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.output())
            if m is not None:
                return m
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.args[:2]} exited: {self.output()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.args[:2]}: no {pattern!r} in {timeout} s")

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._out.close()


def start_server(data_dir: Path, log_level: str = "warning") -> tuple[Proc, str, str]:
    """``corral server`` on plain HTTP; returns it, its URL and the admin password."""
    port = free_port()
    proc = Proc(
        [CORRAL, "server", "--http", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir), "--log-level", log_level],
        data_dir.with_suffix(".log"),
    )  # fmt: skip
    try:
        url = proc.wait_for(r"listening on (\S+)", 60).group(1)
        password = proc.wait_for(r"Admin password \(shown once\): (\S+)", 10).group(1)
    except BaseException:
        proc.stop()
        raise
    return proc, url, password


def start_agent(data_dir: Path, *, driver: str, sim_hosts: int = 1) -> tuple[Proc, str]:
    """``corral agent`` on plain HTTP; returns it and its base URL (once it accepts connections)."""
    port = free_port()
    proc = Proc(
        [CORRAL, "agent", "--http", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir), "--driver", driver, "--sim-hosts", str(sim_hosts),
         "--log-level", "warning"],
        data_dir.with_suffix(".log"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(f"{url}/v1/health", timeout=2).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                proc.stop()
                raise RuntimeError(f"agent did not start: {proc.output()[-2000:]}") from None
            time.sleep(0.1)


def start_up(data_dir: Path, *, driver: str, sim_hosts: int = 1) -> tuple[Proc, str, str]:
    """``corral up`` (server + local agent in one process) on plain HTTP."""
    proc = Proc(
        [CORRAL, "up", "--http", "--host", "127.0.0.1", "--port", "0", "--agent-port", "0",
         "--data-dir", str(data_dir), "--driver", driver, "--sim-hosts", str(sim_hosts)],
        data_dir.with_suffix(".log"),
    )  # fmt: skip
    try:
        url = proc.wait_for(r"Corral is up: (\S+)", 600).group(1)
        password = proc.wait_for(r"Admin password \(shown once\): (\S+)", 10).group(1)
    except BaseException:
        proc.stop()
        raise
    return proc, url, password


@contextlib.asynccontextmanager
async def api(
    url: str, password: str, *, connections: int = 100
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on ``<url>/api/v1``, logged in as admin."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=300, limits=limits) as c:
        r = await c.post("/auth/login", json={"username": "admin", "password": password})
        r.raise_for_status()
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield c


async def wait_op(c: httpx.AsyncClient, op: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """The operation once finished (long-poll)."""
    while True:
        r = await c.get(f"/operations/{op['id']}", params={"wait": timeout})
        r.raise_for_status()
        done: dict[str, Any] = r.json()
        if done["status"] in ("succeeded", "failed", "cancelled"):
            return done


async def ok(c: httpx.AsyncClient, method: str, path: str, **kw: Any) -> dict[str, Any]:
    """Call the API and wait for the operation it started; raise unless it succeeded."""
    r = await c.request(method, path, **kw)
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    op: dict[str, Any] = r.json()
    if "status" in op and "target_type" in op:
        op = await wait_op(c, op)
        if op["status"] != "succeeded":
            raise RuntimeError(f"{method} {path}: {op}")
    return op


async def upload_image(c: httpx.AsyncClient, name: str, path: Path) -> dict[str, Any]:
    op = await ok(c, "POST", "/images", json={"name": name})
    image_id = op["target_id"]
    await ok(c, "PUT", f"/images/{image_id}/data", content=path.read_bytes())
    r = await c.get(f"/images/{image_id}")
    r.raise_for_status()
    image: dict[str, Any] = r.json()
    return image


def make_qcow2(path: Path, size: str = "64M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def rss_mib(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20
