"""Run the installed ``corral`` command as a user does: ``corral up`` in the background, CLI calls."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORRAL = Path(sys.executable).parent / "corral"
"""The ``corral`` entry point installed in the virtualenv running the tests (``.venv/bin/corral``)."""

UP_LINE = re.compile(
    r"^Corral is up: (?P<url>\S+)\s+\(driver: (?P<driver>\w+), hosts: (?P<hosts>\d+)\)"
)
PASSWORD_LINE = re.compile(r"^Admin password \(shown once\): (?P<password>\S+)$")


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: ours minus PYTHONUNBUFFERED (a user's pipe is buffered,
    so output that is not flushed on purpose would not show), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(extra)
    return env


@dataclass
class UpProcess:
    """A running ``corral up``: what it printed, and how to stop it."""

    proc: subprocess.Popen[str]
    log: Path
    url: str = ""
    driver: str = ""
    hosts: int = 0
    password: str | None = None
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def _next_line(self, deadline: float) -> str | None:
        try:
            return self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            return None

    def wait_ready(self, timeout: float) -> None:
        """Read stdout until the ``Log in with:`` line; fail with the log if it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._next_line(deadline)
            if line is None:
                if self.proc.poll() is not None or time.monotonic() >= deadline:
                    break
                continue
            self.lines.append(line)
            if m := UP_LINE.match(line):
                self.url, self.driver, self.hosts = m["url"], m["driver"], int(m["hosts"])
            elif m := PASSWORD_LINE.match(line):
                self.password = m["password"]
            elif line.startswith("Log in with:"):
                return
        raise AssertionError(
            f"corral up not ready in {timeout} s (exit {self.proc.poll()}); stdout: "
            f"{self.lines}; log tail:\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> tuple[int, list[str]]:
        """Send ``sig``, wait for the exit; the exit status and the stdout lines printed after."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"corral up did not stop within {timeout} s of signal {sig}"
            ) from None
        rest = []
        while (line := self._next_line(time.monotonic() + 1)) is not None:
            rest.append(line)
        return code, rest

    def kill(self) -> None:
        """Kill it if it still runs (teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_up(*args: str, log: Path, env: dict[str, str], timeout: float = 90) -> UpProcess:
    """Start ``corral up ARGS``; return once it printed that it is up (stderr goes to ``log``)."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [str(CORRAL), "up", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    up = UpProcess(proc=proc, log=log)

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                up._queue.put(line.rstrip("\n"))
        up._queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        up.wait_ready(timeout)
    except BaseException:
        up.kill()
        raise
    return up


@dataclass
class Cli:
    """``corral`` subcommands run as separate processes with a user's environment."""

    env: dict[str, str]
    timeout: float = 180
    timings: list[tuple[str, float]] = field(default_factory=list)
    """``(command, seconds)`` of every ``run``, for the report of a slow or failed test."""

    def run(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        """Run ``corral ARGS``; check the exit status unless ``expect`` is None."""
        started = time.monotonic()
        done = subprocess.run(
            [str(CORRAL), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=self.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        self.timings.append((" ".join(args), time.monotonic() - started))
        if expect is not None:
            assert done.returncode == expect, (
                f"corral {' '.join(args)}: exit {done.returncode} (expected {expect})\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done

    def json(self, *args: str) -> Any:
        """``corral ARGS -o json``, parsed."""
        return json.loads(self.run(*args, "-o", "json").stdout)

    def vm_statuses(self) -> dict[str, str]:
        """``{name: status}`` from ``corral vm list -o json``."""
        page = self.json("vm", "list")
        return {vm["name"]: vm["status"] for vm in page["items"]}

    def in_terminal(self, *args: str, columns: int = 120) -> tuple[int, str, str]:
        """Run ``corral ARGS`` with stderr on a pseudo-terminal (where progress bars are drawn):
        exit status, stdout and what the terminal received."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
        with contextlib.ExitStack() as stack:
            stack.callback(os.close, master)
            proc = stack.enter_context(
                subprocess.Popen(
                    [str(CORRAL), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=slave,
                    env=self.env,
                )
            )
            os.close(slave)
            received = bytearray()
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            assert proc.stdout is not None
            out = proc.stdout.read()
            code = proc.wait(self.timeout)
        return code, out.decode(), received.decode(errors="replace")


def strip_ansi(text: str) -> str:
    """Terminal output without colour and cursor escape sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
