"""Security-group compile time: the flows of one VM NIC with 5 groups x 200 rules.

- ``firewall.compile_5x200``: ``compile_port`` of a NIC in 5 security groups of 200 rules each
  (a mix of tcp/udp single ports and ranges, icmp, any; a third with a remote CIDR, a tenth with
  a remote group of 20 members; both directions), median of K runs (K = 50, ``--quick``: 5).
  Baseline: the same NIC with 1 group of 200 rules (ratio ~5 means compile time grows linearly
  with the rules). The note gives the number of flows. No target in the issue beyond printing
  it; a rule change is worth it only when compiling is small next to the ~0.1 s of loading flows.
"""

from __future__ import annotations

import random
import time

from bench.common import BenchContext, Figure, median
from corral.netflows.firewall import FwGroup, FwPort, FwRule, compile_port

NAME = "firewall"


def _group(rng: random.Random, n: int) -> FwGroup:
    rules = []
    members = tuple(f"10.9.{i // 250}.{i % 250 + 1}" for i in range(20))
    for i in range(n):
        proto = rng.choice(["tcp", "tcp", "udp", "icmp", "any"])
        low = rng.randrange(1, 60000) if proto in ("tcp", "udp") else None
        high = (low + rng.randrange(0, 500)) if low is not None and i % 3 == 0 else None
        remotes: tuple[str, ...] | None = None
        if i % 10 == 0:
            remotes = members
        elif i % 3 == 0:
            remotes = (f"192.168.{i % 250}.0/24",)
        rules.append(
            FwRule(
                direction="ingress" if i % 2 == 0 else "egress",
                protocol=proto,
                port_min=low,
                port_max=high,
                remotes=remotes,
                action="deny" if i % 7 == 0 else "allow",
            )
        )
    return FwGroup(rules=tuple(rules), intra_group=True, members=members)


def _port(groups: int) -> FwPort:
    rng = random.Random(42)
    return FwPort(
        ofport=10, mac="02:00:00:00:00:0a", ips=("10.9.0.10",), zone=10, cookie=10,
        groups=tuple(_group(rng, 200) for _ in range(groups)),
    )  # fmt: skip


def _time(port: FwPort, rounds: int) -> tuple[float, int]:
    times, flows = [], 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        flows = len(compile_port(port))
        times.append(time.perf_counter() - t0)
    return median(times), flows


async def run(ctx: BenchContext) -> list[Figure]:
    rounds = 5 if ctx.quick else 50
    big, one = _port(5), _port(1)
    base_s, base_flows = _time(one, rounds)
    big_s, big_flows = _time(big, rounds)
    return [
        Figure(
            "firewall.compile_5x200",
            big_s,
            "s",
            "printed (issue 5)",
            baseline=base_s,
            baseline_label="1 group x 200 rules",
            note=f"{big_flows} flows ({base_flows} for the baseline); median of {rounds}",
        )
    ]
