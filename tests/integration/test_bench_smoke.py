"""``bench/run.py --quick`` runs every benchmark end to end and prints every figure (values are not
checked: benchmarks print figures, tests never assert timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = [
    "latency.create_to_running",
    "throughput.split",
    "throughput.up",
    "throughput.raw_simulator_driver",
    "listing.vms_page_p50",
    "listing.vms_page_p95",
    "memory.server_rss",
    "auth.token_p50",
    "auth.access_key_p50",
    "audit.write_p50",
    "audit.writer_records_per_s",
    "snapshots.create_live",
    "snapshots.merge_live",
    "snapshots.merge_offline",
    "clones.full_throughput",
    "clones.full_throughput_durable",
    "clones.batch20_bytes",
    "clones.linked_1g",
    "clones.linked_20g",
    "firewall.compile_5x200",
    "ipam.allocs_per_s_v4",
    "ipam.allocs_per_s_v6",
    "netsync.rule_change_10_hosts",
]


@pytest.mark.slow
@pytest.mark.libvirt
@pytest.mark.timeout(900)
def test_bench_quick_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=850,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = done.stdout
    assert done.returncode == 0, f"{out[-3000:]}\n{done.stderr[-3000:]}"
    summary = out.partition("== summary")[2]
    for name in FIGURES:
        # "<name>   <number> <unit>  |  ... target ..." (not "n/a")
        line = re.search(rf"^{re.escape(name)}\s+(\S+) .*\|\s+target ", summary, re.M)
        assert line is not None, f"{name} missing from the summary:\n{summary}"
        float(line.group(1))
