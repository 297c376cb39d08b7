"""VM clones (``POST /vms/{ref}/clone``) on one libvirt host: how fast a full clone copies its
source's disk next to ``qemu-img convert`` of that disk, how many bytes a batch of full clones
leaves on the host next to one flattened copy in the image store, one in the host's image cache
and the clones' overlays, and how long a linked clone takes for a 1 GiB and a 20 GiB virtual disk.

One stack, ``corral up --driver libvirt`` on qemu:///system (server + local agent in one process,
plain HTTP; libvirtd started by ``scripts/ensure-libvirtd`` if needed), the tiny test image of
``scripts/build-test-image`` (``$CORRAL_TEST_IMAGE`` if set). The source VM is created stopped
(``start: false``) with a 2 GiB root disk; its ``root.qcow2`` (an overlay on the cached test
image, ``<agent data>/pool/vms/<vm_id>/``) gets N MiB of a non-zero pattern at 512 MiB, past the
image's data (``qemu-io -c "write -P 0x5a 512M NM"``; N = 512, ``--quick``: 32). No guest boots.
Stopped VMs claim their vCPUs too: the cluster's CPU overcommit is raised, if needed, so that
the source and the batch's clones fit on the host, then again, if needed, for the two linked
sources and one clone.

- ``clones.full_throughput``: the time from ``POST /vms/src/clone {mode: full, count: 1,
  start: false}`` until
  its ``vm.clone`` operation succeeds (the source's disk flattened by ``qemu-img convert`` into a
  staging file, fsync'd, adopted into the host's image cache, then one ``vm.create``: an overlay
  on that copy and a defined domain; the base's upload to the server's image store,
  ``image.publish``, comes after the operation and is not in that time) vs, as the baseline,
  ``qemu-img convert -O qcow2`` of the same ``root.qcow2`` (with its backing) into a new file of
  the image cache's directory, without fsync. K rounds (K = 3, ``--quick``: 1), who goes first
  alternating; between rounds (not timed) the bench waits for the base's publication (its
  ``host_id`` null; how long it took from the clone's end is in the note), then the clone, its
  base image and the cached copy of it are deleted, and so is the baseline's file. Both figures
  are MiB/s of the same data: the allocated size (``qemu-img info`` actual size) of the
  baseline's flattened file, over the median time; the ratio is Corral / ``qemu-img convert``
  (target >= 0.9x). The note gives where the clone's time goes, from the files it makes
  appearing (polled every 20 ms): the convert (from the request until the staging file is
  written and fsync'd), the adoption into the cache, then the rest (the clone's ``vm.create``,
  the operations' completion); and the time an ``fsync`` of the baseline's file takes after its
  convert (writing it back, which Corral's fsync pays).
- ``clones.full_throughput_durable``: the same clone figure vs a durable baseline: ``qemu-img
  convert`` as above followed by an ``fsync`` of its file (each round: convert + fsync time, the
  median of those sums). Corral's clone makes its copy durable (fsync) before it reports it, a
  plain ``qemu-img convert`` does not (the destination's default cache mode leaves it in the
  page cache): this ratio compares the same guarantee. Both ratios are printed; neither figure
  replaces the other.
- ``clones.batch20_bytes``: ``POST /vms/src/clone {name: "b", mode: full, count: 20, start:
  false}`` (``--quick``: count 3); the figure is the growth of the space allocated on the host (the
  ``st_blocks`` x 512 of every file, after minus before, files that did not grow count 0) under
  the agent's ``pool/images`` and ``pool/vms`` and the server's image store (``<server data>/
  images``), after ``sync`` on both sides; what the batch leaves on the disk, not the I/O of
  files it removed (its staging file is the cached copy, renamed). The baseline is what one
  flattened copy in the store, one in the host's cache and count overlays take, measured on the
  baseline's side: 2 x the allocated size of the ``qemu-img convert`` output above + count x the
  allocated size of a ``qemu-img create -b`` overlay of 2 GiB on it. A ratio of about 1.0 means
  the batch wrote one copy for the store, one for the cache and an overlay per clone, not count
  full copies (their size, count x one flattened copy, is in the note, with Corral's own
  breakdown and how long the batch took). The store's copy is written by ``image.publish``
  after the batch's operation: the bench waits for it (the base's ``host_id`` null) before it
  measures; the note gives how long that took after the batch.
- ``clones.linked_1g`` and ``clones.linked_20g``: after the batch, two more sources, ``src1g``
  and ``src20g``, created stopped with a 1 GiB and a 20 GiB root disk; each ``root.qcow2`` gets
  M MiB of the pattern at 512 MiB (M = 256, ``--quick``: 16, the same for both), and the 20 GiB
  one also 1 MiB in its last MiB, so that it is not all sparse past the data. Then K rounds
  (K = 5, ``--quick``: 2), one clone of each source per round, which goes first alternating:
  the time from ``POST /vms/<source>/clone {name, mode: linked, count: 1, start: false}`` until
  its ``vm.clone`` operation succeeds (the source's ``root.qcow2`` renamed into the image cache as
  a read-only layer and a new empty overlay on it made the source's disk, then the clone's
  ``vm.create``: an overlay on the layer and a defined domain). Between rounds (not timed) the
  clone VM is deleted; its layer stays (the source's disk is an overlay on it), so each round
  freezes a new layer on top of the previous one and the source's backing chain grows by one
  file per round (K layers over the cached test image at the end; fine for K = 5: the note of
  ``clones.linked_20g`` gives the chain's final length). The figures are median seconds.
  ``clones.linked_20g``'s baseline is ``clones.linked_1g``'s median (ratio 20 GiB / 1 GiB,
  target: equal within noise, ratio ~1.0, and <= 0.5 s; every round's times are in its note).
  ``clones.linked_1g``'s baseline ("2 x qemu-img create -b") is the raw cost of what a minimal
  linked clone does at the least, the source's new overlay and the clone's: two ``qemu-img
  create -q -f qcow2 -F qcow2 -b <copy> <overlay> 1G`` in a row, on a scratch copy of the 1 GiB
  source's ``root.qcow2`` (``cp --sparse=always``, taken before its first freeze; not the VM's
  own files), both overlays deleted after each of K rounds (interleaved with the clones); no
  rename, no domain, no API. Its note also gives, measured once after the linked rounds, an
  instant clone of the 1 GiB source: ``POST /vms/src1g/clone {name, mode: instant, count: 1,
  start: false}`` until its operation succeeds (a linked clone, then its stopped disk flattened
  offline by ``qemu-img rebase -b ''``: the whole chain's data copied in).

The stack is stopped at the end, then every domain of a VM it made (``corral-<vm_id>``) is
destroyed and undefined, also when the benchmark fails; the files (the layers too) are in the
scratch directory, which ``run.py`` removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import REPO, BenchContext, Figure, api, median, ok, start_up, upload_image
from bench.latency import test_image
from bench.snapshots import qemu_img, remove_domain, settle

NAME = "clones"
THROUGHPUT_TARGET = "ratio >= 0.9x"
BYTES_TARGET = "ratio ~1.0x (one copy in the store, one in the cache, overlays)"
LINKED_TARGET = "<= 0.5 s"
LINKED_20G_TARGET = "equal within noise (ratio ~1.0) and <= 0.5 s"
LINKED_SIZES = (1, 20)
"""The linked sources' root disks (GiB)."""
URI = "qemu:///system"
MIB = 1 << 20
DISK_GB = 2
FILL_AT = "512M"
"""Where the source's data goes in its root disk: past the test image's data (105 MiB)."""
WATCH_POLL = 0.02
"""Seconds between two looks at the capture's files."""
PUBLISH_POLL = 0.05
"""Seconds between two looks at whether a clone's base is published."""
PHASES = (
    ("convert+fsync", "staged"),
    ("adopt", "cached"),
    ("vm.create+rest", "done"),
)
"""(a phase of the clone, the mark that ends it); a mark not seen merges its phase into the next."""


def fill(path: Path, mib: int, at: str = FILL_AT) -> None:
    """Write ``mib`` MiB of a non-zero pattern at ``at`` (a qemu-io offset) in the qcow2 file
    ``path``."""
    cmd = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {at} {mib}M", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or "wrote" not in done.stdout:
        raise RuntimeError(f"qemu-io on {path}: {done.stdout.strip()} {done.stderr.strip()}")


def actual_size(path: Path) -> int:
    """``qemu-img info``'s actual size (allocated bytes) of ``path``."""
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(json.loads(out)["actual-size"])


def image_info(path: Path, *, chain: bool = False) -> Any:
    """``qemu-img info`` of ``path`` (JSON; with ``chain``, the list of its backing chain)."""
    cmd = ["qemu-img", "info", "-U", "--output=json", *(["--backing-chain"] if chain else []),
           str(path)]  # fmt: skip
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def two_overlays(base: Path, size: int, scratch: Path) -> float:
    """Seconds of two ``qemu-img create -b base`` overlays of ``size`` bytes in a row (the
    overlays are deleted afterwards, not timed)."""
    overlays = [scratch / "overlay-a.qcow2", scratch / "overlay-b.qcow2"]
    t0 = time.perf_counter()
    for over in overlays:
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(over),
                 str(size))  # fmt: skip
    dt = time.perf_counter() - t0
    for over in overlays:
        over.unlink()
    return dt


def allocated(dirs: list[Path]) -> dict[Path, int]:
    """Every file under ``dirs``: its allocated bytes (``st_blocks`` x 512)."""
    sizes: dict[Path, int] = {}
    for d in dirs:
        for p in d.rglob("*") if d.is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                st = p.lstat()
                if not p.is_symlink() and p.is_file():
                    sizes[p] = st.st_blocks * 512
    return sizes


@dataclass
class Watch:
    """When each file of a capture first appears (``time.perf_counter``), polled in a thread:
    ``staged`` the agent's complete staging file, ``uploading`` the server's partial store
    file, ``stored`` the stored image, ``cached`` the copy adopted into the image cache. Names
    present when the watch starts are ignored."""

    images_dir: Path
    store_dir: Path
    marks: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _names(self) -> tuple[set[str], set[str]]:
        def ls(d: Path) -> set[str]:
            try:
                return set(os.listdir(d))
            except FileNotFoundError:
                return set()

        return ls(self.images_dir), ls(self.store_dir)

    def start(self) -> None:
        old_images, old_store = self._names()
        rules = (
            ("staged", 0, ".capture.part"),
            ("uploading", 1, ".part"),
            ("stored", 1, ".img"),
            ("cached", 0, ".qcow2"),
        )

        def loop() -> None:
            while not self._stop.is_set():
                now = time.perf_counter()
                images, store = self._names()
                new = (images - old_images, store - old_store)
                for mark, where, suffix in rules:
                    if mark not in self.marks and any(n.endswith(suffix) for n in new[where]):
                        self.marks[mark] = now
                self._stop.wait(WATCH_POLL)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self, done: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.marks["done"] = done

    def phases(self, t0: float) -> dict[str, float]:
        """Seconds of each phase of ``PHASES`` (phases ending on an unseen mark merged)."""
        out: dict[str, float] = {}
        prev, label = t0, ""
        for phase, mark in PHASES:
            label = f"{label}+{phase}" if label else phase
            if mark in self.marks and self.marks[mark] >= prev:
                out[label] = self.marks[mark] - prev
                prev, label = self.marks[mark], ""
        return out


def rounds_note(xs: list[float]) -> str:
    return "/".join(f"{x * 1000:.0f}" for x in xs) + " ms"


def phase_note(runs: list[dict[str, float]]) -> str:
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return ", ".join(f"{k} {median([r[k] for r in runs]):.2f} s" for k in keys)


async def vm_ids(c: httpx.AsyncClient) -> list[str]:
    r = await c.get("/vms", params={"limit": 500})
    r.raise_for_status()
    return [vm["id"] for vm in r.json()["items"]]


async def image_id(c: httpx.AsyncClient, name: str) -> str:
    r = await c.get(f"/images/{name}")
    r.raise_for_status()
    return str(r.json()["id"])


async def published(c: httpx.AsyncClient, name: str, timeout: float = 600) -> float:
    """When (``time.perf_counter``) the image ``name`` is seen published: in the image store,
    ``host_id`` null, ``sha256`` set (polled every ``PUBLISH_POLL`` s). Raises if its
    publication failed or took longer than ``timeout``."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        r = await c.get(f"/images/{name}")
        r.raise_for_status()
        img = r.json()
        if img.get("error"):
            raise RuntimeError(f"image {name}: {img['error']}")
        if img["host_id"] is None and img["sha256"]:
            return time.perf_counter()
        await asyncio.sleep(PUBLISH_POLL)
    raise TimeoutError(f"image {name} is not published after {timeout} s")


def fsync_file(path: Path) -> None:
    """``fsync`` of the file ``path``: its data written back to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def allow_vcpus(c: httpx.AsyncClient, need: int) -> None:
    """Raise the cluster's CPU overcommit until the local host holds ``need`` vCPUs: stopped
    VMs claim theirs too (the default, 4 per thread, is 8 on a 2-thread machine)."""
    host = (await c.get("/hosts")).json()["items"][0]
    if host["capacity"]["cpus_total"] - host["capacity"]["cpus_used"] >= need:
        return
    threads = host["facts"]["cpu_threads"]
    ratio = min(64.0, float(-(-(need + host["capacity"]["cpus_used"]) // threads)))
    await ok(c, "PATCH", f"/clusters/{host['cluster_id']}", json={"cpu_overcommit": ratio})


async def run(ctx: BenchContext) -> list[Figure]:
    import libvirt

    rounds = 1 if ctx.quick else 3
    mib = 32 if ctx.quick else 512
    count = 3 if ctx.quick else 20
    linked_rounds = 2 if ctx.quick else 5
    linked_mib = 16 if ctx.quick else 256
    await asyncio.to_thread(subprocess.run, [str(REPO / "scripts/ensure-libvirtd")], check=True)
    image = test_image()
    work = ctx.workdir
    server_dir = work / "up"
    pool = server_dir / "agent" / "pool"
    images_dir, vms_dir, store_dir = pool / "images", pool / "vms", server_dir / "images"
    known: set[str] = set()  # Corral VM ids, whose domains go at the end
    corral_s: list[float] = []
    convert_s: list[float] = []
    fsync_s: list[float] = []
    publish_s: list[float] = []
    phases: list[dict[str, float]] = []
    flat = overlay = 0
    linked_s: dict[int, list[float]] = {gb: [] for gb in LINKED_SIZES}
    two_s: list[float] = []
    proc, url, password = start_up(server_dir, driver="libvirt")
    try:
        async with api(url, password) as c:
            # --- set-up: the stopped source with N MiB on its root disk ------------------------
            await upload_image(c, "tiny", image)
            body = {"name": "src", "image": "tiny", "cpus": 1, "memory_mb": 128,
                    "disk_gb": DISK_GB, "start": False}  # fmt: skip
            await ok(c, "POST", "/vms", json=body)
            src = (await c.get("/vms/src")).json()
            known.add(src["id"])
            root = vms_dir / src["id"] / "root.qcow2"
            await asyncio.to_thread(fill, root, mib)
            await allow_vcpus(c, count + 1)
            ctx.say(f"source {src['id']} stopped with {mib} MiB at {FILL_AT} of its root disk")

            # --- clones.full_throughput -------------------------------------------------------
            async def corral_clone(name: str) -> None:
                watch = Watch(images_dir, store_dir)
                await settle()
                watch.start()
                t0 = time.perf_counter()
                try:
                    body = {"name": name, "mode": "full", "count": 1, "start": False}
                    await ok(c, "POST", "/vms/src/clone", json=body)
                finally:
                    t1 = time.perf_counter()
                    watch.stop(t1)
                corral_s.append(t1 - t0)
                phases.append(watch.phases(t0))
                known.update(await vm_ids(c))
                # not timed: the base's publication (after the clone: off its path)
                publish_s.append(await published(c, f"{name}-base") - t1)
                # not timed: the clone, its base image and the host's cached copy go
                base = await image_id(c, f"{name}-base")
                await ok(c, "DELETE", f"/vms/{name}")
                await ok(c, "DELETE", f"/images/{name}-base")
                (images_dir / f"{base}.qcow2").unlink(missing_ok=True)

            async def convert(i: int) -> None:
                nonlocal flat, overlay
                dest = images_dir / f"bench-convert-{i}.qcow2"
                await settle()
                t0 = time.perf_counter()
                await asyncio.to_thread(qemu_img, "convert", "-q", "-f", "qcow2", "-O", "qcow2",
                                        str(root), str(dest))  # fmt: skip
                convert_s.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await asyncio.to_thread(fsync_file, dest)
                fsync_s.append(time.perf_counter() - t0)
                await settle()
                flat = await asyncio.to_thread(actual_size, dest)
                over = images_dir / f"bench-overlay-{i}.qcow2"
                await asyncio.to_thread(qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2",
                                        "-b", str(dest), str(over), f"{DISK_GB}G")  # fmt: skip
                await settle()
                overlay = await asyncio.to_thread(actual_size, over)
                over.unlink()
                dest.unlink()

            for i in range(rounds):
                for who in ("corral", "convert") if i % 2 == 0 else ("convert", "corral"):
                    if who == "corral":
                        await corral_clone(f"full-{i}")
                    else:
                        await convert(i)
                ctx.say(f"round {i}: clone {corral_s[-1]:.2f} s "
                        f"({phase_note(phases[-1:])}; published {publish_s[-1]:.2f} s later), "
                        f"qemu-img convert {convert_s[-1]:.2f} s (+ fsync {fsync_s[-1]:.2f} s), "
                        f"{flat / MIB:.0f} MiB flattened")  # fmt: skip

            # --- clones.batch20_bytes ---------------------------------------------------------
            dirs = [images_dir, vms_dir, store_dir]
            await settle()
            before = await asyncio.to_thread(allocated, dirs)
            watch = Watch(images_dir, store_dir)
            watch.start()
            t0 = time.perf_counter()
            try:
                body = {"name": "b", "mode": "full", "count": count, "start": False}
                await ok(c, "POST", "/vms/src/clone", json=body)
            finally:
                t1 = time.perf_counter()
                watch.stop(t1)
            batch_s = t1 - t0
            known.update(await vm_ids(c))
            batch_publish_s = await published(c, "b-base") - t1  # the store's copy, after
            await settle()
            after = await asyncio.to_thread(allocated, dirs)
            grown = {p: n - before.get(p, 0) for p, n in after.items() if n > before.get(p, 0)}
            written = sum(grown.values())
            base = await image_id(c, "b-base")
            cached = grown.get(images_dir / f"{base}.qcow2", 0)
            stored = grown.get(store_dir / f"{base}.img", 0)
            in_vms = sum(n for p, n in grown.items() if p.is_relative_to(vms_dir))
            other = written - cached - stored - in_vms
            capture_s = watch.marks.get("cached", t1) - t0
            ctx.say(f"batch of {count}: {batch_s:.2f} s (capture {capture_s:.2f} s), published "
                    f"{batch_publish_s:.2f} s later, {len(grown)} files grew by "
                    f"{written / MIB:.1f} MiB")  # fmt: skip

            # --- clones.linked_1g, clones.linked_20g: the sources ------------------------------
            await allow_vcpus(c, len(LINKED_SIZES) + 1)
            roots: dict[int, Path] = {}
            for gb in LINKED_SIZES:
                body = {"name": f"src{gb}g", "image": "tiny", "cpus": 1, "memory_mb": 128,
                        "disk_gb": gb, "start": False}  # fmt: skip
                await ok(c, "POST", "/vms", json=body)
                vm = (await c.get(f"/vms/src{gb}g")).json()
                known.add(vm["id"])
                roots[gb] = vms_dir / vm["id"] / "root.qcow2"
                size = int((await asyncio.to_thread(image_info, roots[gb]))["virtual-size"])
                if size != gb << 30:
                    raise RuntimeError(f"src{gb}g: a {size}-byte disk, not {gb} GiB")
                await asyncio.to_thread(fill, roots[gb], linked_mib)
                if gb == max(LINKED_SIZES):  # not all sparse past the data
                    await asyncio.to_thread(fill, roots[gb], 1, str(size - MIB))
            scratch = work / "linked-baseline"
            scratch.mkdir()
            copy = scratch / "root-1g.qcow2"
            await asyncio.to_thread(subprocess.run, ["cp", "--sparse=always", str(roots[1]),
                                    str(copy)], check=True)  # fmt: skip
            ctx.say(f"linked sources stopped with {linked_mib} MiB at {FILL_AT} of their "
                    f"{' and '.join(f'{gb} GiB' for gb in LINKED_SIZES)} root disks")  # fmt: skip

            # --- clones.linked_1g, clones.linked_20g: the rounds -------------------------------
            async def linked_clone(gb: int, i: int) -> None:
                name = f"linked{gb}g-{i}"
                await settle()
                t0 = time.perf_counter()
                body = {"name": name, "mode": "linked", "count": 1, "start": False}
                await ok(c, "POST", f"/vms/src{gb}g/clone", json=body)
                linked_s[gb].append(time.perf_counter() - t0)
                known.update(await vm_ids(c))
                await ok(c, "DELETE", f"/vms/{name}")  # not timed; its layer stays

            async def baseline_overlays() -> None:
                await settle()
                two_s.append(await asyncio.to_thread(two_overlays, copy, 1 << 30, scratch))

            for i in range(linked_rounds):
                order = [*LINKED_SIZES, 0]
                for gb in order if i % 2 == 0 else order[::-1]:
                    if gb:
                        await linked_clone(gb, i)
                    else:
                        await baseline_overlays()
                ctx.say(f"linked round {i}: "
                        + ", ".join(f"{gb} GiB {linked_s[gb][-1]:.3f} s" for gb in LINKED_SIZES)
                        + f", 2 x qemu-img create -b {two_s[-1]:.3f} s")  # fmt: skip
            chain = len(await asyncio.to_thread(image_info, roots[20], chain=True))

            # --- an instant clone of the 1 GiB source, once ------------------------------------
            await settle()
            t0 = time.perf_counter()
            body = {"name": "instant1g", "mode": "instant", "count": 1, "start": False}
            await ok(c, "POST", "/vms/src1g/clone", json=body)
            instant_s = time.perf_counter() - t0
            known.update(await vm_ids(c))
            inst = (await c.get("/vms/instant1g")).json()
            inst_root = vms_dir / inst["id"] / "root.qcow2"
            inst_info = await asyncio.to_thread(image_info, inst_root)
            if "backing-filename" in inst_info:
                raise RuntimeError(
                    f"the instant clone's disk is on {inst_info['backing-filename']}"
                )
            inst_mib = int(inst_info["actual-size"]) / MIB
            ctx.say(f"instant clone of the 1 GiB source: {instant_s:.2f} s "
                    f"(standalone disk, {inst_mib:.0f} MiB allocated)")  # fmt: skip
    finally:
        proc.stop()  # VMs survive a stop: their domains go here
        if vms_dir.is_dir():
            known.update(p.name for p in vms_dir.iterdir())
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # absent/stopped is fine
        conn = libvirt.open(URI)
        try:
            for vm in known:
                remove_domain(conn, f"corral-{vm}")
        finally:
            conn.close()
            libvirt.registerErrorHandler(None, None)  # libvirt's default: print to stderr

    data = flat / MIB
    baseline_bytes = 2 * flat + count * overlay
    durable_s = [a + b for a, b in zip(convert_s, fsync_s, strict=True)]
    return [
        Figure("clones.full_throughput", data / median(corral_s), "MiB/s", THROUGHPUT_TARGET,
               data / median(convert_s), "qemu-img convert -O qcow2, no fsync",
               f"median of {rounds}; {data:.0f} MiB flattened ({mib} MiB written + the tiny "
               f"image), clone {median(corral_s):.2f} s vs convert {median(convert_s):.2f} s "
               f"(+ fsync {median(fsync_s):.2f} s); clone phases: {phase_note(phases)}; the "
               f"base published {median(publish_s):.2f} s after the clone (not in its time)"),
        Figure("clones.full_throughput_durable", data / median(corral_s), "MiB/s",
               THROUGHPUT_TARGET, data / median(durable_s),
               "qemu-img convert -O qcow2 + fsync of the file",
               f"median of {rounds}; clone {median(corral_s):.2f} s vs convert + fsync "
               f"{median(durable_s):.2f} s (rounds {rounds_note(durable_s)}): the clone's copy "
               f"is fsync'd too"),
        Figure("clones.batch20_bytes", written / MIB, "MiB", BYTES_TARGET, baseline_bytes / MIB,
               f"2 x {flat / MIB:.1f} MiB flattened + {count} x {overlay / 1024:.0f} KiB overlay",
               f"{count} clones in {batch_s:.2f} s (capture {capture_s:.2f} s; published "
               f"{batch_publish_s:.2f} s later, measured after that); corral: cache "
               f"{cached / MIB:.1f} + store {stored / MIB:.1f} + VM dirs {in_vms / MIB:.1f} + "
               f"other {other / MIB:.1f} MiB; {count} full copies = "
               f"{count * flat / MIB:.0f} MiB"),
        Figure("clones.linked_1g", median(linked_s[1]), "s", LINKED_TARGET, median(two_s),
               "2 x qemu-img create -b",
               f"median of {linked_rounds}; {linked_mib} MiB written; instant clone (once, "
               f"flattened offline by qemu-img rebase -b ''): {instant_s:.2f} s, "
               f"{inst_mib:.0f} MiB standalone disk"),
        Figure("clones.linked_20g", median(linked_s[20]), "s", LINKED_20G_TARGET,
               median(linked_s[1]), "clones.linked_1g",
               f"median of {linked_rounds}; {linked_mib} MiB + 1 MiB at the end written; "
               f"rounds 20 GiB {rounds_note(linked_s[20])}, 1 GiB {rounds_note(linked_s[1])}; "
               f"source's chain after: {chain} files"),
    ]  # fmt: skip
