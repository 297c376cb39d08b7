"""An iSCSI target served by tgtd (userspace) on 127.0.0.1, LUNs backed by sparse files.

There is no open-iscsi initiator (nor LIO) on these machines: clients are QEMU's built-in iSCSI
driver (libiscsi), e.g. ``qemu-img info iscsi://127.0.0.1:PORT/<iqn>/1``. Each target runs its
own tgtd, with its own management socket (``/run/tgtd/socket.<control_port>``) and portal port, so
several can run at once (also from different test sessions).
"""

from __future__ import annotations

import fcntl
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.storage.daemons import (
    Daemon,
    ServerError,
    free_port,
    require_root,
    require_tools,
    run,
    wait_for,
    workdir,
)

HOST = "127.0.0.1"
TID = 1
SOCKETS = Path("/run/tgtd")
MIB = 1 << 20


@dataclass
class IscsiTarget:
    """One target (``iqn``) on ``host:port`` and its LUNs (numbered from 1; LUN 0 is tgtd's
    controller). ``chap`` is ``(user, password)`` when the target requires CHAP."""

    host: str
    port: int
    iqn: str
    control_port: int
    directory: Path
    chap: tuple[str, str] | None = None
    luns: dict[int, Path] = field(default_factory=dict)
    pid: int = 0
    startup_s: float = 0.0

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, lun: int) -> str:
        """QEMU's filename of LUN ``lun``, with the CHAP credentials if the target has them."""
        auth = f"{self.chap[0]}%{self.chap[1]}@" if self.chap else ""
        return f"iscsi://{auth}{self.portal}/{self.iqn}/{lun}"

    def tgtadm(self, *args: str) -> str:
        """Run ``tgtadm`` against this target's tgtd; its output."""
        return run(["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args], timeout=30)

    def add_lun(self, size: int, lun: int | None = None) -> int:
        """Add a LUN of ``size`` bytes backed by a new sparse file (at runtime: clients see it at
        their next connection); returns its number (the next free one unless given)."""
        number = lun if lun is not None else max(self.luns, default=0) + 1
        if number in self.luns or number < 1:
            raise ValueError(f"LUN {number} exists or is reserved")
        backing = self.directory / f"lun{number}.img"
        with backing.open("xb") as f:
            f.truncate(size)
        try:
            self.tgtadm(
                *("--mode", "logicalunit", "--op", "new", "--tid", str(TID)),
                *("--lun", str(number), "--backing-store", str(backing)),
            )
        except ServerError:
            backing.unlink()
            raise
        self.luns[number] = backing
        return number

    def remove_lun(self, lun: int) -> None:
        """Remove LUN ``lun`` and its backing file (fails while an initiator uses it)."""
        self.tgtadm("--mode", "logicalunit", "--op", "delete", "--tid", str(TID), "--lun", str(lun))
        self.luns.pop(lun).unlink()

    def show(self) -> str:
        """tgtd's description of the target (LUNs, sizes, connected initiators)."""
        return self.tgtadm("--mode", "target", "--op", "show")


def check_available() -> None:
    """Raise Unavailable if this machine cannot run tgtd."""
    require_root("the iSCSI target")
    require_tools("the iSCSI target", "tgtd", "tgtadm")


def remove_stale_sockets() -> list[Path]:
    """Delete the management sockets of tgtd processes that are gone (a killed test's tgtd
    leaves ``/run/tgtd/socket.N`` and its ``.lock``, which a live tgtd keeps locked)."""
    removed = []
    for lock in SOCKETS.glob("socket.*.lock"):
        try:
            with lock.open("a") as f:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stale = [lock.with_suffix(""), lock]
                for path in stale:
                    path.unlink(missing_ok=True)
                removed += stale
        except OSError:  # locked: its tgtd runs
            continue
    return removed


def _start_tgtd(root: Path, port: int) -> tuple[Daemon, int]:
    """tgtd on a free management socket: tgtd refuses a socket another tgtd holds."""
    remove_stale_sockets()
    for _ in range(5):
        control = random.randrange(1024, 32000)  # tgtd takes at most 32767
        if (SOCKETS / f"socket.{control}").exists():
            continue
        tgtd = Daemon(
            "tgtd",
            [
                # -p: no pid file in the foreground, but the work dir shows in `pgrep -af`
                *("tgtd", "-f", "-C", str(control), "-p", str(root / "tgtd.pid")),
                *("--iscsi", f"portal={HOST}:{port}"),
            ],
            root / "tgtd.log",
            death_signal=signal.SIGKILL,  # tgtd does not exit on SIGTERM while it has targets
        )
        tgtd.start()
        probe = ["tgtadm", "-C", str(control), "--lld", "iscsi", "--mode", "system", "--op", "show"]

        def ready(probe: list[str] = probe) -> bool:
            return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0

        try:
            wait_for("tgtd", ready, timeout=10, daemons=[tgtd])
        except ServerError:
            tgtd.stop(timeout=2)
            continue
        return tgtd, control
    raise ServerError(f"tgtd did not start: see {root / 'tgtd.log'}")


def _shutdown(target: IscsiTarget, tgtd: Daemon) -> None:
    """Drop the target (and its sessions) and ask tgtd to exit; SIGTERM/SIGKILL if it does not."""
    if tgtd.running():
        with suppress(ServerError):
            target.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(TID))
        with suppress(ServerError):
            target.tgtadm("--mode", "system", "--op", "delete")
        tgtd.wait_exit(5)
    tgtd.stop(timeout=5)
    for name in (f"socket.{target.control_port}", f"socket.{target.control_port}.lock"):
        with suppress(FileNotFoundError):
            (SOCKETS / name).unlink()


@contextmanager
def iscsi_target(
    lun_sizes: Sequence[int] = (64 * MIB,),
    *,
    iqn: str | None = None,
    chap: tuple[str, str] | None = None,
) -> Iterator[IscsiTarget]:
    """A target with one LUN per size in ``lun_sizes`` (LUNs 1, 2, …), open to every initiator
    (or to CHAP ``(user, password)``) on 127.0.0.1 until the block exits; then tgtd is stopped
    and the backing files deleted. Start-up takes a few ms."""
    check_available()
    started = time.monotonic()
    root = workdir("iscsi")
    port = free_port()
    name = iqn or f"iqn.2026-01.org.corral.test:{uuid.uuid4().hex[:12]}"
    tgtd: Daemon | None = None
    target: IscsiTarget | None = None
    try:
        tgtd, control = _start_tgtd(root, port)
        target = IscsiTarget(HOST, port, name, control, root, chap, pid=tgtd.pid)
        target.tgtadm("--mode", "target", "--op", "new", "--tid", str(TID), "--targetname", name)
        target.tgtadm("--mode", "target", "--op", "bind", "--tid", str(TID), "-I", "ALL")
        if chap is not None:
            user, password = chap
            target.tgtadm(
                "--mode", "account", "--op", "new", "--user", user, "--password", password
            )
            target.tgtadm("--mode", "account", "--op", "bind", "--tid", str(TID), "--user", user)
        for size in lun_sizes:
            target.add_lun(size)
        target.startup_s = time.monotonic() - started
        yield target
    finally:
        if tgtd is not None and target is not None:
            _shutdown(target, tgtd)
        elif tgtd is not None:
            tgtd.stop(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
