"""Run Corral's benchmarks and print each figure next to its baseline (same run) and its target.

usage: .venv/bin/python bench/run.py [--only NAME[,NAME…]] [--quick] [--keep]

Benchmarks: latency (a), throughput (b), listing (c), memory (d) of the foundation issue; auth
(token vs AccessKey vs no auth), audit (audit-log write overhead), snapshots (snapshot create and
delete-by-merge of a data volume on a running guest), clones (full-clone throughput vs qemu-img
convert, bytes a batch of clones writes, linked-clone time by disk size), ipam (IPAM allocations
per second under contention vs plain inserts); see each module's docstring.
No asserts: a figure that misses its target is printed, not failed. The exit status is 1 only if a
benchmark could not be measured at all (its figures then print as ``n/a``).
``--quick`` uses small sizes (a smoke test of the benchmarks themselves, figures not meaningful).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchContext, Figure

BENCHMARKS = {
    "latency": ("bench.latency", ["latency.create_to_running"]),
    "throughput": (
        "bench.throughput",
        ["throughput.split", "throughput.up", "throughput.raw_simulator_driver"],
    ),
    "listing": ("bench.listing", ["listing.vms_page_p50", "listing.vms_page_p95"]),
    "memory": ("bench.memory", ["memory.server_rss"]),
    "auth": ("bench.auth", ["auth.token_p50", "auth.access_key_p50"]),
    "audit": ("bench.audit", ["audit.write_p50", "audit.writer_records_per_s"]),
    "snapshots": (
        "bench.snapshots",
        ["snapshots.create_live", "snapshots.merge_live", "snapshots.merge_offline"],
    ),
    "clones": (
        "bench.clones",
        [
            "clones.full_throughput",
            "clones.full_throughput_durable",
            "clones.batch20_bytes",
            "clones.linked_1g",
            "clones.linked_20g",
        ],
    ),
    "firewall": ("bench.firewall", ["firewall.compile_5x200"]),
    "ipam": ("bench.ipam", ["ipam.allocs_per_s_v4", "ipam.allocs_per_s_v6"]),
    "netsync": ("bench.netsync", ["netsync.rule_change_10_hosts"]),
}
"""name -> (module, the figures it prints)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    # the benchmarks delete what they made between rounds: for good, not into the recycle bin
    os.environ.setdefault("CORRAL_DELETION_POLICY", "immediate")
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",")]
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    # /var/tmp and 0755: QEMU (libvirt-qemu) must reach the disks of the libvirt benchmark
    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-", dir="/var/tmp"))
    workdir.chmod(0o755)
    failed = False
    results: list[Figure | str] = []
    try:
        for name in names:
            module_name, figure_names = BENCHMARKS[name]
            print(f"== {name}", flush=True)
            started = time.monotonic()
            bench_dir = workdir / name
            bench_dir.mkdir()
            ctx = BenchContext(quick=args.quick, workdir=bench_dir)
            try:
                module = importlib.import_module(module_name)
                figures: list[Figure] = asyncio.run(module.run(ctx))
            except Exception:
                traceback.print_exc()
                failed = True
                results += [f"{f:<34} {'n/a':>12}  |  benchmark failed" for f in figure_names]
                continue
            for f in figures:
                print(f.line(), flush=True)
            results += figures
            print(f"   ({name} took {time.monotonic() - started:.0f} s)", flush=True)
    finally:
        if args.keep:
            print(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n== summary" + (" (--quick: sizes too small to mean anything)" if args.quick else ""))
    for r in results:
        print(r if isinstance(r, str) else r.line())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
