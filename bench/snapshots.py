"""Snapshot create and delete-by-merge times of a data volume on a running guest, through the
agent's snapshot tasks vs the raw libvirt / qemu-img calls a minimal implementation makes.

One TCG guest (the tiny test image of ``scripts/build-test-image``, ``$CORRAL_TEST_IMAGE`` if set)
defined and started through the agent's ``TaskExecutor`` (``LibvirtDriver`` on qemu:///system,
``real_backends()``, as ``corral agent --driver libvirt`` builds them) with two data volumes of
1 GiB, qcow2, in a ``local`` pool of the scratch directory, both made and attached by the agent's
``volume.create`` / ``volume.attach`` tasks (the same kind of disk) and both filled with the same
N MiB by ``qemu-io`` before the start (N = 256, ``--quick``: 16). vdb is Corral's, vdc the
baseline's. Each round (K = 5, ``--quick``: 2), agent and baseline alternating who goes first:

- ``snapshots.create_live``: the ``snapshot.create`` task on the running VM (overlay by the
  backend, disk-only external snapshot, persistent definition and stored spec switched to the
  overlay) vs ``qemu-img create`` of the overlay + ``snapshotCreateXML`` (DISK_ONLY, NO_METADATA,
  REUSE_EXT, ATOMIC; the other disks ``snapshot='no'``, their list read once beforehand).
- ``snapshots.merge_live``: delete-by-merge of the snapshot just taken (the file under the active
  one, holding the N MiB) while the guest runs: the live ``snapshot.rebase`` task (block pull of
  the active file onto the snapshot's backing, none here: all N MiB are copied) +
  ``snapshot.delete`` vs ``blockRebase`` + ``blockJobInfo`` polled every 20 ms + unlink.
- ``snapshots.merge_offline``: the same merge with the VM stopped (force): an offline
  ``snapshot.create`` (not timed), then the ``snapshot.rebase`` task (``qemu-img rebase`` safe
  mode, then the VM redefined from its spec) + ``snapshot.delete`` vs ``qemu-img rebase -b ''``
  + unlink. The baseline volume is detached first (its raw snapshots left the agent's spec of it
  stale).

Before each timed step the host's page cache is written back (``sync``, not timed): QEMU's disks
are writeback-cached and a snapshot flushes its disk, so a create would otherwise also pay for
the previous merge's N MiB. Medians of the K rounds; merge rates are N MiB over the median. At
the end both volumes' files must be standalone and read the same (``qemu-img compare``). The
domain is destroyed and undefined afterwards (and its libvirt log removed), also when the
benchmark fails; the files are in the scratch directory, which ``run.py`` removes.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchContext, Figure, median
from bench.latency import test_image

NAME = "snapshots"
TARGET = "ratio <= 1.2x (the issue sets none)"
URI = "qemu:///system"
MIB = 1 << 20
RAW_POLL = 0.02
"""Seconds between two ``blockJobInfo`` calls of the baseline's pull."""


def qemu_img(*args: str) -> None:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)}: {done.stderr.strip()}")


def fill(path: Path, mib: int) -> None:
    """Write ``mib`` MiB of a non-zero pattern at the start of the qcow2 file ``path``."""
    cmd = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {mib}M", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or "wrote" not in done.stdout:
        raise RuntimeError(f"qemu-io on {path}: {done.stdout.strip()} {done.stderr.strip()}")


def wait_for_console(path: Path, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while marker not in (path.read_text(errors="replace") if path.exists() else ""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {marker!r} on the guest console {path} in {timeout} s")
        time.sleep(0.2)


def live_disks(dom: Any) -> dict[str, tuple[str, list[str]]]:
    """Each disk target of the running domain: (its file, the files under it, nearest first)."""
    root = ET.fromstring(dom.XMLDesc(0))
    disks: dict[str, tuple[str, list[str]]] = {}
    for disk in root.iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is None or source is None:
            continue
        chain = [s.get("file", "") for s in disk.iterfind(".//backingStore/source")]
        disks[target.get("dev", "")] = (source.get("file", ""), chain)
    return disks


def snapshot_xml(targets: list[str], target: str, path: Path) -> str:
    others = "".join(f"<disk name='{t}' snapshot='no'/>" for t in targets if t != target)
    return (
        f"<domainsnapshot><disks>{others}<disk name='{target}' snapshot='external' type='file'>"
        f"<driver type='qcow2'/><source file='{path}'/></disk></disks></domainsnapshot>"
    )


@dataclass
class Raw:
    """The baseline: a minimal implementation's calls on its own disk ``target`` of the VM."""

    dom: Any
    target: str
    pool_dir: Path
    targets: list[str]
    files: list[str] = field(default_factory=lambda: ["b0"])
    made: int = 1

    def new_name(self) -> str:
        self.made += 1
        return f"b{self.made - 1}"

    def create_live(self) -> float:
        import libvirt

        old, new = self.files[-1], self.new_name()
        flags = (
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
            | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        )
        t0 = time.perf_counter()
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", old,
                 str(self.pool_dir / new))  # fmt: skip
        self.dom.snapshotCreateXML(snapshot_xml(self.targets, self.target, self.pool_dir / new),
                                   flags)  # fmt: skip
        elapsed = time.perf_counter() - t0
        self.files.append(new)
        active, chain = live_disks(self.dom)[self.target]
        if active != str(self.pool_dir / new) or not chain:
            raise RuntimeError(f"baseline snapshot: {self.target} is on {active} {chain}")
        return elapsed

    def merge_live(self) -> float:
        """Pull the active file onto nothing, then delete the file under it."""
        old = self.files[-2]
        t0 = time.perf_counter()
        self.dom.blockRebase(self.target, None, 0, 0)
        while self.dom.blockJobInfo(self.target, 0):
            time.sleep(RAW_POLL)
        (self.pool_dir / old).unlink()
        elapsed = time.perf_counter() - t0
        self.files.remove(old)
        active, chain = live_disks(self.dom)[self.target]
        if active != str(self.pool_dir / self.files[-1]) or chain:
            raise RuntimeError(f"baseline pull: {self.target} is on {active} {chain}")
        return elapsed

    def create_offline(self) -> None:
        old, new = self.files[-1], self.new_name()
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", old,
                 str(self.pool_dir / new))  # fmt: skip
        self.files.append(new)

    def merge_offline(self) -> float:
        active, old = self.files[-1], self.files[-2]
        t0 = time.perf_counter()
        qemu_img("rebase", "-q", "-f", "qcow2", "-b", "", str(self.pool_dir / active))
        (self.pool_dir / old).unlink()
        elapsed = time.perf_counter() - t0
        self.files.remove(old)
        return elapsed


async def settle() -> None:
    """``sync`` (not timed) before each timed step: QEMU's disks are cached (writeback), and a
    snapshot flushes its disk, so a step would otherwise also pay for the previous step's writes
    still in the page cache."""
    import asyncio

    await asyncio.to_thread(os.sync)


async def timed(step: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await step()
    return time.perf_counter() - t0


def remove_domain(conn: Any, name: str) -> None:
    import libvirt

    from corral.agent.compute.libvirt.domains import UNDEFINE_FLAGS

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    with contextlib.suppress(libvirt.libvirtError):
        dom.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        dom.undefineFlags(UNDEFINE_FLAGS)
    with contextlib.suppress(OSError):
        Path(f"/var/log/libvirt/qemu/{name}.log").unlink()


def check_same(a: Path, b: Path) -> None:
    """Both files standalone and with the same content (the two paths did the same merge)."""
    for path in (a, b):
        info = subprocess.run(["qemu-img", "info", "-U", str(path)], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        if "backing file:" in info:
            raise RuntimeError(f"{path} still has a backing file:\n{info}")
    qemu_img("compare", "-q", "-f", "qcow2", "-F", "qcow2", str(a), str(b))


async def run(ctx: BenchContext) -> list[Figure]:
    import asyncio

    import libvirt

    from corral.agent.compute.libvirt import LibvirtDriver, ensure_event_loop
    from corral.agent.compute.libvirt.bootsector import READY_MARKER
    from corral.agent.compute.libvirt.disk_ops import FIRST_POLL_S
    from corral.agent.executor import TaskExecutor
    from corral.agent.faults import FaultPlan
    from corral.agent.specs import SpecStore
    from corral.agent.storage.dirpool import DirPool
    from corral.agent.storage.volumes import real_backends
    from corral.api.agent import (
        DataDisk,
        ImageRef,
        PoolRef,
        SnapshotCreateTask,
        SnapshotDeleteFileTask,
        SnapshotRebaseTask,
        VmDefine,
        VmPower,
        VmSpec,
        VolumeAttachTask,
        VolumeCreateTask,
        VolumeDetachTask,
        VolumeRef,
    )

    rounds = 2 if ctx.quick else 5
    mib = 16 if ctx.quick else 256
    work = ctx.workdir
    base = work / "base.qcow2"
    shutil.copyfile(test_image(), base)  # the cache under ~ is not readable by QEMU
    base.chmod(0o644)
    pool = PoolRef(id="bench-local", type="local", settings={"path": str(work / "pool")})
    pool_dir = work / "pool" / "volumes"
    root_disks = DirPool(work / "disks")
    vm = f"bench-{uuid.uuid4().hex[:10]}"
    a_id, b_id = uuid.uuid4().hex, uuid.uuid4().hex

    async def fetch(_image: ImageRef, _dest: Path) -> None:
        raise AssertionError("no image is fetched here")

    ensure_event_loop()
    conn = libvirt.open(URI)
    driver = LibvirtDriver(uri=URI, console_dir=work / "console", disk_root=root_disks.root)
    create_s: tuple[list[float], list[float]] = ([], [])
    live_s: tuple[list[float], list[float]] = ([], [])
    offline_s: tuple[list[float], list[float]] = ([], [])
    try:
        await driver.open(lambda _event: None)
        specs = SpecStore(work / "vms")
        specs.open()
        ex = TaskExecutor(compute=driver, volumes=root_disks, specs=specs, faults=FaultPlan(),
                          fetch=fetch, drift={}, backends=real_backends())  # fmt: skip
        a_files = ["a0"]
        a_made = itertools.count(1)

        def ref(volume_id: str, name: str) -> VolumeRef:
            return VolumeRef(volume_id=volume_id, pool=pool, name=name, size_gb=1)

        # --- set-up: the VM with its two volumes, filled, running ----------------------------
        t_setup = time.monotonic()
        root = Path(root_disks.disk_path(vm))
        root.parent.mkdir(parents=True)
        root.parent.chmod(0o755)
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(root))
        await ex.run(VolumeCreateTask(volume=ref(a_id, "a0")))
        await ex.run(VolumeCreateTask(volume=ref(b_id, "b0")))
        for name in ("a0", "b0"):
            await asyncio.to_thread(fill, pool_dir / name, mib)
        spec = VmSpec(vm_id=vm, name=vm, cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw")
        await ex.run(VmDefine(spec=spec))
        for volume_id, name, dev in ((a_id, "a0", "vdb"), (b_id, "b0", "vdc")):
            disk = DataDisk(volume=ref(volume_id, name), device=dev)
            await ex.run(VolumeAttachTask(vm_id=vm, disk=disk))
        await ex.run(VmPower(kind="vm.start", vm_id=vm))
        console = driver.console_dir / f"{vm}.log"
        await asyncio.to_thread(wait_for_console, console, READY_MARKER, 120)
        dom = conn.lookupByName(f"corral-{vm}")
        raw = Raw(dom=dom, target="vdc", pool_dir=pool_dir, targets=list(live_disks(dom)))
        ctx.say(f"guest up with 2 x {mib} MiB volumes in {time.monotonic() - t_setup:.1f} s"
                f" (disks {', '.join(raw.targets)})")  # fmt: skip

        # --- live: snapshot, then delete-by-merge of that snapshot ---------------------------
        async def corral_create() -> float:
            old, new = a_files[-1], f"a{next(a_made)}"
            task = SnapshotCreateTask(volume=ref(a_id, old), new_name=new, vm_id=vm)
            elapsed = await timed(lambda: ex.run(task))
            a_files.append(new)
            return elapsed

        async def corral_merge(live: bool) -> float:
            active, old = a_files[-1], a_files[-2]
            pull = SnapshotRebaseTask(volume=ref(a_id, active), name=active, backing=None,
                                      vm_id=vm, live=live)  # fmt: skip
            delete = SnapshotDeleteFileTask(volume=ref(a_id, old), name=old)

            async def merge() -> None:
                await ex.run(pull)
                await ex.run(delete)

            elapsed = await timed(merge)
            a_files.remove(old)
            return elapsed

        for i in range(rounds):
            for who in ("corral", "raw") if i % 2 == 0 else ("raw", "corral"):
                if who == "corral":
                    await settle()
                    create_s[0].append(await corral_create())
                    await settle()
                    live_s[0].append(await corral_merge(live=True))
                else:
                    await settle()
                    create_s[1].append(await asyncio.to_thread(raw.create_live))
                    await settle()
                    live_s[1].append(await asyncio.to_thread(raw.merge_live))
            ctx.say(f"live round {i}: create corral {create_s[0][-1] * 1000:.0f} ms, raw "
                    f"{create_s[1][-1] * 1000:.0f} ms; merge {mib} MiB corral "
                    f"{live_s[0][-1]:.2f} s, raw {live_s[1][-1]:.2f} s")  # fmt: skip

        # --- offline: the same merge with the VM stopped -------------------------------------
        await ex.run(VmPower(kind="vm.stop", vm_id=vm, force=True))
        await ex.run(VolumeDetachTask(vm_id=vm, volume_id=b_id))
        for i in range(rounds):
            for who in ("corral", "raw") if i % 2 == 0 else ("raw", "corral"):
                if who == "corral":
                    old, new = a_files[-1], f"a{next(a_made)}"
                    task = SnapshotCreateTask(volume=ref(a_id, old), new_name=new, vm_id=vm)
                    if (await ex.run(task)).get("live") is not False:
                        raise RuntimeError(f"offline snapshot {new} was not offline")
                    a_files.append(new)
                    await settle()
                    offline_s[0].append(await corral_merge(live=False))
                else:
                    await asyncio.to_thread(raw.create_offline)
                    await settle()
                    offline_s[1].append(await asyncio.to_thread(raw.merge_offline))
            ctx.say(f"offline round {i}: merge {mib} MiB corral {offline_s[0][-1]:.2f} s, "
                    f"raw {offline_s[1][-1]:.2f} s")  # fmt: skip
        a_last, b_last = pool_dir / a_files[-1], pool_dir / raw.files[-1]
        await asyncio.to_thread(check_same, a_last, b_last)
        left = sorted(p.name for p in pool_dir.iterdir())
        if left != sorted([a_last.name, b_last.name]):
            raise RuntimeError(f"files left in the pool: {left}")
    finally:
        with contextlib.suppress(Exception):
            await driver.close()
        remove_domain(conn, f"corral-{vm}")
        conn.close()

    def rates(xs: list[float]) -> str:
        return f"{mib / median(xs):.0f} MiB/s"

    agent_poll = inspect.signature(LibvirtDriver).parameters["poll_interval"].default
    note = f"median of {rounds}; TCG guest, 1 GiB qcow2 volumes, local pool"
    merge_note = f"{note}; {mib} MiB copied"
    return [
        Figure("snapshots.create_live", median(create_s[0]), "s", TARGET, median(create_s[1]),
               "qemu-img create + snapshotCreateXML", note),
        Figure("snapshots.merge_live", median(live_s[0]), "s", TARGET, median(live_s[1]),
               f"blockRebase + blockJobInfo every {RAW_POLL * 1000:.0f} ms + unlink",
               f"{merge_note}: corral {rates(live_s[0])}, raw {rates(live_s[1])}; corral's driver"
               f" polls the job from {FIRST_POLL_S * 1000:.0f} ms, doubling up to"
               f" {agent_poll * 1000:.0f} ms"),
        Figure("snapshots.merge_offline", median(offline_s[0]), "s", TARGET,
               median(offline_s[1]), "qemu-img rebase -b '' + unlink",
               f"{merge_note}: corral {rates(offline_s[0])}, raw {rates(offline_s[1])}"),
    ]  # fmt: skip
