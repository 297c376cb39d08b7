"""IPAM: a subnet's addresses as integers, and allocating and releasing them.

The arithmetic (``Space``, ``plan``) is pure: a subnet is its CIDR's bounds, the host addresses
(IPv4: without the network and broadcast addresses, except /31 and /32; IPv6: without the
Subnet-Router anycast address, except /127 and /128), the gateway, the allocation ranges and the
reserved addresses. Nothing ever lists a range's addresses (an IPv6 /64 has 2^64): the next free
address is found by walking the ranges with the sorted set of blocked addresses (used, reserved,
gateway) that fall inside them.

``allocate`` and ``release`` run inside the caller's transaction (a hold through the API, a VM
NIC later). The primary key (subnet, address) makes a duplicate impossible: an allocation that
loses a race gets an ``IntegrityError`` on its insert, which a SAVEPOINT confines (the caller's
transaction goes on), re-reads the used set and tries again, spreading over the first free
addresses so that parallel allocators stop colliding; after ``MAX_ATTEMPTS`` it gives up
(``Conflict``, ``reason="allocation_contention"``).
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import random
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import Conflict, InUse, InvalidInput, NotFound
from corral.server.db.tables import IpAllocationRow, SubnetRow

MAX_ATTEMPTS = 32
"""Inserts one allocation tries before giving up under contention."""
SPREAD_MAX = 1024
"""After a lost race, the next try picks at random among at most this many first free
addresses (fewer on the first retries)."""


def host_bounds(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    """The first and last host address of ``net`` as integers."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        return (first, last) if net.prefixlen >= 31 else (first + 1, last - 1)
    return (first, last) if net.prefixlen >= 127 else (first + 1, last)


@dataclass(frozen=True)
class Space:
    """A subnet's addresses as integers. ``ranges`` are disjoint, inside ``low``-``high`` and
    kept in their given order (the allocator fills them in that order)."""

    version: int
    first: int
    last: int
    low: int
    high: int
    gateway: int | None
    ranges: tuple[tuple[int, int], ...]
    reserved: frozenset[int]

    @classmethod
    def of(
        cls,
        cidr: str,
        gateway: str | None,
        ranges: Sequence[Sequence[str]],
        reserved: Iterable[str],
    ) -> Space:
        """The space of a stored (already validated) subnet."""
        net = ipaddress.ip_network(cidr)
        low, high = host_bounds(net)
        return cls(
            version=net.version,
            first=int(net.network_address),
            last=int(net.broadcast_address),
            low=low,
            high=high,
            gateway=None if gateway is None else int(ipaddress.ip_address(gateway)),
            ranges=tuple((_int(a), _int(b)) for a, b in ranges),
            reserved=frozenset(_int(a) for a in reserved),
        )

    def text(self, n: int) -> str:
        """The canonical text of address ``n``."""
        return str(ipaddress.IPv4Address(n) if self.version == 4 else ipaddress.IPv6Address(n))

    def parse(self, address: str) -> int:
        """Address text (of any version) to an integer; ``ValueError`` if it is not one or is
        of the other IP version."""
        a = ipaddress.ip_address(address)
        if a.version != self.version:
            raise ValueError(f"{address} is not an IPv{self.version} address")
        return int(a)

    def parse_stored(self, address: str) -> int:
        """A stored (canonical) address to an integer, fast (no ``ipaddress`` objects)."""
        family = socket.AF_INET if self.version == 4 else socket.AF_INET6
        return int.from_bytes(socket.inet_pton(family, address), "big")

    def texts(self, ranges: Iterable[tuple[int, int]]) -> list[list[str]]:
        return [[self.text(a), self.text(b)] for a, b in ranges]

    @property
    def size(self) -> int:
        """How many addresses the ranges hold."""
        return sum(b - a + 1 for a, b in self.ranges)

    @property
    def excluded(self) -> frozenset[int]:
        """Addresses never handed out: the reserved ones and the gateway."""
        return self.reserved if self.gateway is None else self.reserved | {self.gateway}

    @functools.cached_property
    def _sorted(self) -> tuple[list[int], list[int]]:
        ordered = sorted(self.ranges)
        return [a for a, _ in ordered], [b for _, b in ordered]

    def in_ranges(self, n: int) -> bool:
        starts, ends = self._sorted
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= ends[i]

    def refusal(self, n: int) -> str | None:
        """Why address ``n`` cannot be allocated (a static request), None if it can: it must
        be a host address of the CIDR, not the gateway nor reserved. Ranges do not matter."""
        if not self.first <= n <= self.last:
            return "outside"
        if n < self.low or n > self.high:
            return "network" if n == self.first else "broadcast"
        if n == self.gateway:
            return "gateway"
        if n in self.reserved:
            return "reserved"
        return None

    def blocked(self, used: Iterable[int]) -> list[int]:
        """The sorted addresses inside the ranges that are not free: ``used`` and excluded."""
        found = set(used)
        found.update(self.excluded)
        if len(self.ranges) == 1:
            a, b = self.ranges[0]
            return sorted(n for n in found if a <= n <= b)
        return sorted(n for n in found if self.in_ranges(n))

    def free(self, blocked: Sequence[int]) -> int:
        """How many addresses of the ranges are free (``blocked`` from ``blocked()``)."""
        return self.size - len(blocked)

    def nth_free(self, blocked: Sequence[int], n: int = 0) -> int | None:
        """The ``n``-th (0: the lowest) free address walking the ranges in order, None if
        there are not that many. ``blocked``: sorted, as ``blocked()`` returns it."""
        for a, b in self.ranges:
            i = bisect.bisect_left(blocked, a)
            cur = a
            while cur <= b:
                stop = blocked[i] if i < len(blocked) and blocked[i] <= b else b + 1
                if n < stop - cur:
                    return cur + n
                n -= stop - cur
                cur, i = stop + 1, i + 1
        return None

    def covers(self) -> bool:
        """Whether every address an allocation may take lies in the ranges (then the used
        addresses in the ranges are all the used ones: no need to load them to count)."""
        outside = sum(
            1 for n in self.excluded if self.low <= n <= self.high and not self.in_ranges(n)
        )
        return self.size + outside == self.high - self.low + 1

    def available(self, used: Iterable[int]) -> int:
        return self.free(self.blocked(used))


def _int(address: str) -> int:
    return int(ipaddress.ip_address(address))


def _range_doc(start: str, end: str, problem: str | None = None) -> dict[str, str]:
    doc = {"start": start, "end": end}
    return doc if problem is None else {**doc, "problem": problem}


def plan(
    cidr: str,
    gateway: str | None,
    no_gateway: bool,
    ranges: Sequence[tuple[str, str]],
    reserved: Sequence[str],
) -> Space:
    """Check a subnet's settings and return its space. ``gateway`` None and not ``no_gateway``:
    the first host address; ``ranges`` empty: every host address but the gateway. Refusals are
    ``InvalidInput`` with the offending items in the context (``field``; ``gateway``;
    ``ranges``: each with its ``problem``; ``overlaps``: pairs of ranges; ``reserved``)."""
    net = ipaddress.ip_network(cidr)
    low, high = host_bounds(net)
    space = Space(net.version, int(net.network_address), int(net.broadcast_address), low, high,
                  None, (), frozenset())  # fmt: skip
    gw: int | None = None
    if gateway is not None and no_gateway:
        raise InvalidInput("give a gateway or no_gateway, not both", field="gateway")
    if gateway is not None:
        problem = _problem(space, gateway)
        if problem is not None:
            raise InvalidInput(
                f"gateway {gateway} is {problem} of {cidr}", field="gateway", gateway=gateway
            )
        gw = space.parse(gateway)
    elif not no_gateway:
        gw = low
    bad = [
        _range_doc(a, b, p)
        for a, b in ranges
        if (p := _problem(space, a) or _problem(space, b) or _order(space, a, b)) is not None
    ]
    if bad:
        raise InvalidInput(
            f"{len(bad)} range(s) are not ranges of host addresses of {cidr}: "
            + "; ".join(f"{r['start']}-{r['end']}: {r['problem']}" for r in bad),
            field="ranges",
            ranges=bad,
        )
    spans = [(space.parse(a), space.parse(b)) for a, b in ranges]
    overlaps = []
    widest: tuple[int, int] | None = None  # of the ranges so far, the one reaching furthest
    for span in sorted(spans):
        if widest is not None and span[0] <= widest[1]:
            overlaps.append([_range_doc(*space.texts([widest])[0]),
                             _range_doc(*space.texts([span])[0])])  # fmt: skip
        if widest is None or span[1] > widest[1]:
            widest = span
    if overlaps:
        raise InvalidInput(
            "ranges overlap: "
            + "; ".join(
                f"{x['start']}-{x['end']} and {y['start']}-{y['end']}" for x, y in overlaps
            ),
            field="ranges",
            overlaps=overlaps,
        )
    outside = [a for a in reserved if _problem(space, a, hosts=False) is not None]
    if outside:
        raise InvalidInput(
            f"reserved addresses outside {cidr}: {', '.join(outside)}",
            field="reserved",
            reserved=outside,
        )
    if not spans:
        around = [(low, high)] if gw is None else [(low, gw - 1), (gw + 1, high)]
        spans = [r for r in around if r[0] <= r[1]]
    return Space(space.version, space.first, space.last, low, high, gw, tuple(spans),
                 frozenset(space.parse(a) for a in reserved))  # fmt: skip


def _problem(space: Space, address: str, *, hosts: bool = True) -> str | None:
    """Why ``address`` is not a host address (``hosts``: else not an address) of the space."""
    try:
        n = space.parse(address)
    except ValueError:
        return f"not an IPv{space.version} address"
    if not space.first <= n <= space.last:
        return "outside the CIDR"
    if hosts and not space.low <= n <= space.high:
        return "the network address" if n == space.first else "the broadcast address"
    return None


def _order(space: Space, start: str, end: str) -> str | None:
    return "start after end" if space.parse(start) > space.parse(end) else None


# allocations


def space_of(row: SubnetRow) -> Space:
    return Space.of(row.cidr, row.gateway, row.ranges, row.reserved)


async def used_addresses(s: AsyncSession, subnet_id: str) -> list[str]:
    """Every allocated address of the subnet (text), read with Core (no ORM rows: a subnet
    may hold many)."""
    conn = await s.connection()
    stmt = select(IpAllocationRow.address).where(IpAllocationRow.subnet_id == subnet_id)
    return list((await conn.execute(stmt)).scalars().all())


def _spread(space: Space, blocked: Sequence[int], attempt: int) -> int:
    """Which free address (0: the lowest) try ``attempt`` takes: the lowest first, then one of
    the first few at random, the window doubling with each lost race."""
    if attempt == 0:
        return 0
    window = min(space.free(blocked), SPREAD_MAX, 2 << attempt)
    return random.randrange(window) if window > 1 else 0


def _full(subnet: SubnetRow, space: Space) -> Conflict:
    return Conflict(
        f"subnet {subnet.name!r} has no free address left in its ranges",
        reason="subnet_full",
        subnet=subnet.name,
        ranges=space.texts(space.ranges),
    )


def _static(subnet: SubnetRow, space: Space, address: str) -> int:
    try:
        n = space.parse(address)
    except ValueError:
        raise InvalidInput(
            f"{address} is not an IPv{space.version} address", field="address", address=address
        ) from None
    why = space.refusal(n)
    if why is not None:
        text = {
            "outside": f"outside {subnet.cidr}",
            "network": f"the network address of {subnet.cidr}",
            "broadcast": f"the broadcast address of {subnet.cidr}",
            "gateway": "the gateway",
            "reserved": "reserved",
        }[why]
        raise InvalidInput(
            f"{address} is {text} in subnet {subnet.name!r}: it cannot be allocated",
            field="address",
            address=address,
            reason=why,
        )
    return n


async def allocate(
    s: AsyncSession,
    subnet: SubnetRow,
    address: str | None = None,
    *,
    nic_id: str | None = None,
    vm_id: str | None = None,
    host_id: str | None = None,
) -> str:
    """Allocate an address of ``subnet`` in the caller's transaction and return it (canonical
    text). ``address``: exactly this one (``InvalidInput`` unless a host address of the CIDR,
    not the gateway nor reserved; ``InUse``, ``reason="address_in_use"``, naming the holder if
    allocated); None: the lowest free address of the ranges (``host_id``: the address of that
    host's DHCP server) (``Conflict``,
    ``reason="subnet_full"``, when none is left). ``NotFound`` if the subnet is deleted
    meanwhile. The caller's pending changes are flushed first."""
    await s.flush()
    space = space_of(subnet)
    wanted = None if address is None else _static(subnet, space, address)
    for attempt in range(MAX_ATTEMPTS):
        if wanted is None:
            blocked = space.blocked(_ints(space, await used_addresses(s, subnet.id)))
            candidate = space.nth_free(blocked, _spread(space, blocked, attempt))
            if candidate is None:
                raise _full(subnet, space)
        else:
            candidate = wanted
        text = space.text(candidate)
        values = {
            "subnet_id": subnet.id,
            "address": text,
            "nic_id": nic_id,
            "vm_id": vm_id,
            "host_id": host_id,
        }
        try:
            async with s.begin_nested():
                await s.execute(insert(IpAllocationRow).values(**values))
            return text
        except IntegrityError:
            if await s.scalar(select(SubnetRow.id).where(SubnetRow.id == subnet.id)) is None:
                raise NotFound(f"subnet {subnet.name!r} not found", kind="subnet") from None
            if wanted is not None and (holder := await _holder(s, subnet.id, text)) is not None:
                raise in_use(subnet, holder) from None
    raise Conflict(
        f"no address of subnet {subnet.name!r} could be allocated after {MAX_ATTEMPTS} attempts "
        "(too many parallel allocations): retry",
        reason="allocation_contention",
        subnet=subnet.name,
    )


def _ints(space: Space, addresses: Iterable[str]) -> list[int]:
    return [space.parse_stored(a) for a in addresses]


async def _holder(s: AsyncSession, subnet_id: str, address: str) -> IpAllocationRow | None:
    return await s.scalar(
        select(IpAllocationRow)
        .where(IpAllocationRow.subnet_id == subnet_id, IpAllocationRow.address == address)
        .execution_options(populate_existing=True)
    )


def in_use(subnet: SubnetRow, holder: IpAllocationRow) -> InUse:
    """The refusal of an address ``holder`` has: by a NIC (of a VM) or held."""
    by = f"NIC {holder.nic_id} of VM {holder.vm_id}" if holder.nic_id else "a hold"
    if holder.host_id:
        by = f"the DHCP server of host {holder.host_id}"
    return InUse(
        f"{holder.address} of subnet {subnet.name!r} is in use ({by})",
        reason="address_in_use",
        address=holder.address,
        nic_id=holder.nic_id,
        vm_id=holder.vm_id,
    )


async def release(s: AsyncSession, subnet_id: str, address: str) -> bool:
    """Free an address in the caller's transaction (whoever holds it); False if it was free."""
    result: Any = await s.execute(
        delete(IpAllocationRow).where(
            IpAllocationRow.subnet_id == subnet_id, IpAllocationRow.address == address
        )
    )
    return bool(result.rowcount)


async def release_nic(s: AsyncSession, nic_id: str) -> int:
    """Free every address of a NIC in the caller's transaction; how many were freed."""
    result: Any = await s.execute(delete(IpAllocationRow).where(IpAllocationRow.nic_id == nic_id))
    return int(result.rowcount or 0)
