"""IPAM allocations per second under contention, against plain inserts (same process, same run).

A server's services run in this process on SQLite (no HTTP: the service layer). ``N`` allocators
run concurrently on one subnet, each allocation ``ipam.allocate`` (the next free address: the
used set read, the ranges walked with integers, the insert in a SAVEPOINT) in its own session
and transaction, as a VM NIC's would be. Baseline: the same number of plain inserts of
precomputed addresses into the same table, same concurrency, one session and transaction each:
what the storage costs without any IPAM. The ratio is what IPAM's reads and checks cost on top
(the used set is read whole for each allocation: the cost grows with the addresses in use). The
two sides alternate in rounds.
Two subnets: an IPv4 /16 and an IPv6 /64 (whose 2^64 addresses are never listed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

from bench.common import BenchContext, Figure

NAME = "ipam"
TARGET = ">= 100 alloc/s (the issue sets none)"


async def _subnet(svc: Any, name: str, cidr: str) -> Any:
    from sqlalchemy import select

    from corral.api.networks import SubnetCreate
    from corral.server.db.tables import SubnetRow
    from corral.server.services import subnets

    await subnets.create_subnet(svc=svc, spec=SubnetCreate(name=name, port_group="pg", cidr=cidr))
    async with svc.sessionmaker() as s:
        return await s.scalar(select(SubnetRow).where(SubnetRow.name == name))


ROUNDS = 4
"""The two sides alternate in this many rounds (the machine's load drifts: one block each
would measure the drift)."""


async def _seconds(workers: int, calls: range, one: Any) -> float:
    """Seconds ``workers`` concurrent tasks take to make the calls ``one(i)`` for ``calls``."""
    queue = iter(calls)

    async def worker() -> None:
        for i in queue:
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - t0


async def _measure(
    svc: Any, cidrs: tuple[str, str], tag: str, workers: int, total: int
) -> tuple[float, float]:
    """(IPAM allocations/s on a subnet of ``cidrs[0]``, plain inserts/s on one of
    ``cidrs[1]``)."""
    from sqlalchemy import func, insert, select

    from corral.server.db.tables import IpAllocationRow
    from corral.server.services import ipam

    sm = svc.sessionmaker
    row = await _subnet(svc, f"bench-{tag}", cidrs[0])
    plain = await _subnet(svc, f"plain-{tag}", cidrs[1])
    first = int(ipaddress.ip_network(plain.cidr).network_address) + 2
    addresses = [str(ipaddress.ip_address(first + i)) for i in range(total)]

    async def allocate(i: int) -> None:
        async with sm() as s:
            await ipam.allocate(s, row, nic_id=f"{i:032x}")
            await s.commit()

    async def insert_one(i: int) -> None:
        async with sm() as s:
            values = {"subnet_id": plain.id, "address": addresses[i], "nic_id": f"{i:032x}"}
            await s.execute(insert(IpAllocationRow).values(**values))
            await s.commit()

    spent = {allocate: 0.0, insert_one: 0.0}
    step = total // ROUNDS
    for r in range(ROUNDS):
        calls = range(r * step, total if r == ROUNDS - 1 else (r + 1) * step)
        for one in (allocate, insert_one) if r % 2 else (insert_one, allocate):
            spent[one] += await _seconds(workers, calls, one)
    rate, base = total / spent[allocate], total / spent[insert_one]
    async with sm() as s:
        n = await s.scalar(
            select(func.count(func.distinct(IpAllocationRow.address))).where(
                IpAllocationRow.subnet_id == row.id
            )
        )
    if n != total:
        raise RuntimeError(f"{n} distinct addresses for {total} allocations")
    return rate, base


async def run(ctx: BenchContext) -> list[Figure]:
    from corral.api.networks import PortGroupCreate, SwitchCreate
    from corral.server.app import start
    from corral.server.services import networks
    from corral.server.settings import ServerSettings

    workers = 4 if ctx.quick else 16
    total = 100 if ctx.quick else 2000
    server = await start(ServerSettings(data_dir=ctx.workdir / "server", port=0, tls=False,
                                        admin_password="bench-admin-password-123"), listen=False)  # fmt: skip
    try:
        svc = server.services
        await networks.create_switch(svc=svc, spec=SwitchCreate(name="sw"))
        await networks.create_port_group(
            svc=svc, spec=PortGroupCreate(name="pg", switch="sw", type="flat")
        )
        ctx.say(f"{workers} allocators, {total} allocations per subnet")
        v4, v4_base = await _measure(svc, ("10.0.0.0/16", "10.1.0.0/16"), "v4", workers, total)
        v6, v6_base = await _measure(svc, ("fd00::/64", "fd01::/64"), "v6", workers, total)
    finally:
        await server.stop()
    label = f"plain inserts, {workers} concurrent"
    note = f"SQLite, {workers} allocators, {total} allocations"
    return [
        Figure("ipam.allocs_per_s_v4", v4, "alloc/s", TARGET, v4_base, label, note=note + ", /16"),
        Figure("ipam.allocs_per_s_v6", v6, "alloc/s", TARGET, v6_base, label, note=note + ", /64"),
    ]
