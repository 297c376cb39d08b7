"""What the storage servers have in common: owned daemon processes, readiness polling, checks.

Every daemon is started in the foreground as a child of the test process (so it is ours to stop,
and reaped), with stdout/stderr in a log file under its server's work directory, and with a parent
death signal: if pytest itself is killed, the kernel sends the daemon SIGTERM, so nothing keeps
running. Work directories are named ``corral-storage-*`` and every daemon's command line contains
its work directory, so ``pgrep -af corral-storage-`` lists whatever a crashed run left behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "corral-storage-"
_PR_SET_PDEATHSIG = 1


class Unavailable(Exception):
    """This machine cannot run the server (not root, a package missing): the reason says which.

    The pytest fixtures turn it into a skip (which ``CORRAL_NO_SKIP=1`` turns into a failure)."""


class ServerError(Exception):
    """A server did not start, or a command against it failed: the message has its log's tail."""


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable(f"{what} needs root (it runs daemons and binds privileged ports)")


def require_tools(what: str, *tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise Unavailable(f"{what} needs {', '.join(missing)}: run scripts/setup")


def workdir(kind: str) -> Path:
    """A fresh ``corral-storage-<kind>-*`` directory (0755: QEMU may run as another user)."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-"))
    path.chmod(0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} unreadable)"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends ``sig`` to the child when its parent thread dies."""

    def set_death_signal() -> None:  # pragma: no cover - runs between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))

    return set_death_signal


@dataclass
class Daemon:
    """One foreground daemon process. ``start`` returns at once; readiness is the caller's.

    ``death_signal`` reaches it if the thread that started it dies (start daemons from the main
    thread): SIGTERM, or SIGKILL for daemons that ignore SIGTERM."""

    name: str
    argv: list[str]
    log: Path
    death_signal: signal.Signals = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        assert self.popen is None, f"{self.name} is running"
        with self.log.open("ab") as out:
            out.write(f"--- {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(self.death_signal),
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check(self) -> None:
        """Raise ServerError (with the log's tail) if the daemon has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise ServerError(
                f"{self.name} exited with {self.popen.returncode}; {self.log}:\n{tail(self.log)}"
            )

    def wait_exit(self, timeout: float) -> bool:
        """Whether the daemon exited (and was reaped) within ``timeout`` seconds."""
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            if not self.wait_exit(timeout):
                self.popen.kill()
                self.popen.wait()
        self.popen = None


def wait_for(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout: float,
    daemons: Sequence[Daemon] = (),
    interval: float = 0.05,
) -> float:
    """Poll ``ready()`` until true; returns the seconds it took. Raises ServerError after
    ``timeout`` seconds, or as soon as one of ``daemons`` exits."""
    started = time.monotonic()
    while True:
        for d in daemons:
            d.check()
        if ready():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            logs = "\n".join(f"{d.log}:\n{tail(d.log)}" for d in daemons)
            raise ServerError(f"{what}: not ready after {timeout:.0f} s\n{logs}")
        time.sleep(interval)


def run(argv: Sequence[str], *, timeout: float = 60.0, input: str | None = None) -> str:
    """Run a command; its stdout. Raises ServerError with its stderr if it fails."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerError(f"{' '.join(argv)}: timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise ServerError(
            f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr.strip()}\n{done.stdout.strip()}"
        )
    return done.stdout


def succeeds(argv: Sequence[str], timeout: float = 10.0) -> bool:
    try:
        return subprocess.run(list(argv), capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def dev_null_intact() -> bool:
    """Whether /dev/null is still the character device 1:3 (a Ceph admin socket pointed at it
    deletes it, and then every VM start on the machine fails)."""
    try:
        st = os.lstat("/dev/null")
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)


def check_dev_null() -> None:
    """Raise ServerError if /dev/null was damaged, after putting the real one back (as root)."""
    if dev_null_intact():
        return
    if os.geteuid() == 0:
        tmp = f"/dev/.null-{os.getpid()}"
        os.mknod(tmp, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(tmp, 0o666)
        os.replace(tmp, "/dev/null")
    raise ServerError("/dev/null was replaced or deleted (restored it): a path points at it")
