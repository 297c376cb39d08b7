"""Subnets (IP pools) of port groups, and the addresses held on them through the API.

Every change is one transaction ending with a finished operation. The checks of a subnet's
settings are ``ipam.plan``'s; here: the port group exists, names are unique, subnets of one port
group do not overlap (the port group row is locked while a subnet is added, so two parallel
creates cannot both pass on PostgreSQL), a reserved address is not allocated already, and a
subnet with allocations is not deleted. ``used`` and ``available`` are counted per page: the
allocations are counted in SQL and loaded only for subnets whose ranges leave out some host
addresses (a static allocation may sit outside the ranges there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.common import Page
from corral.api.errors import InUse, InvalidInput, NotFound
from corral.api.networks import (
    IpAllocation,
    IpAllocationHeld,
    IpRange,
    Subnet,
    SubnetCreate,
    SubnetUpdate,
)
from corral.api.operations import Operation
from corral.server.db.tables import IpAllocationRow, PortGroupRow, SubnetRow
from corral.server.db.types import utcnow
from corral.server.query import specs
from corral.server.services import ipam, net_sync
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free, finish
from corral.server.services.listing import Kind, get_row

SUBNET = "subnet"
SHOWN = 20
"""How many allocations a refused delete lists (then their count)."""


def to_model(r: SubnetRow, used: int = 0, available: int = 0) -> Subnet:
    return Subnet(
        id=r.id,
        name=r.name,
        port_group_id=r.port_group_id,
        ip_version=r.ip_version,
        cidr=r.cidr,
        gateway=r.gateway,
        dns_servers=list(r.dns_servers),
        ranges=[IpRange(start=a, end=b) for a, b in r.ranges],
        reserved=list(r.reserved),
        dhcp=r.dhcp,
        description=r.description,
        used=used,
        available=available,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


async def counts(s: AsyncSession, rows: Sequence[SubnetRow]) -> dict[str, tuple[int, int]]:
    """``{subnet id: (used, available)}``: allocations counted in SQL; their addresses loaded
    only for subnets whose ranges do not cover every allocatable address."""
    ids = [r.id for r in rows]
    if not ids:
        return {}
    used: dict[str, int] = dict.fromkeys(ids, 0)
    for sid, n in await s.execute(
        select(IpAllocationRow.subnet_id, func.count())
        .where(IpAllocationRow.subnet_id.in_(ids))
        .group_by(IpAllocationRow.subnet_id)
    ):
        used[sid] = int(n)
    spaces = {r.id: ipam.space_of(r) for r in rows}
    partial = [i for i, sp in spaces.items() if used[i] and not sp.covers()]
    addresses: dict[str, list[str]] = {i: [] for i in partial}
    if partial:
        for sid, address in await s.execute(
            select(IpAllocationRow.subnet_id, IpAllocationRow.address).where(
                IpAllocationRow.subnet_id.in_(partial)
            )
        ):
            addresses[sid].append(address)
    out: dict[str, tuple[int, int]] = {}
    for i, sp in spaces.items():
        if i in addresses:
            free = sp.available(sp.parse_stored(a) for a in addresses[i])
        else:  # every allocation is in the ranges, none on an excluded address
            free = sp.free(sp.blocked(())) - used[i]
        out[i] = (used[i], max(free, 0))
    return out


class SubnetKind(Kind[SubnetRow, Subnet]):
    """Subnets with their ``used`` and ``available`` counts."""

    async def models(self, s: AsyncSession, rows: list[SubnetRow]) -> list[Subnet]:
        found = await counts(s, rows)
        return [to_model(r, *found[r.id]) for r in rows]


SUBNETS = SubnetKind(SUBNET, SubnetRow, to_model, specs.SUBNETS, Subnet)


def _pairs(ranges: Sequence[IpRange]) -> list[tuple[str, str]]:
    return [(r.start, r.end) for r in ranges]


async def _check_overlap(s: AsyncSession, group: PortGroupRow, cidr: str) -> None:
    """``InvalidInput`` naming the subnets of the port group that ``cidr`` overlaps; locks the
    port group row (PostgreSQL) so parallel creates check one after the other."""
    await s.execute(select(PortGroupRow.id).where(PortGroupRow.id == group.id).with_for_update())
    net = ipaddress.ip_network(cidr)
    others = await s.execute(
        select(SubnetRow.name, SubnetRow.cidr).where(SubnetRow.port_group_id == group.id)
    )
    clash = [
        {"name": name, "cidr": other}
        for name, other in others
        if (o := ipaddress.ip_network(other)).version == net.version and o.overlaps(net)
    ]
    if clash:
        raise InvalidInput(
            f"{cidr} overlaps subnet(s) of port group {group.name!r}: "
            + ", ".join(f"{c['name']} ({c['cidr']})" for c in clash),
            field="cidr",
            subnets=sorted(clash, key=lambda c: c["name"]),
        )


async def create_subnet(*, svc: Services, spec: SubnetCreate) -> Operation:
    """A subnet on ``spec.port_group`` (rules: ``ipam.plan`` and the module docstring)."""
    async with svc.sessionmaker() as s:
        group = await get_row(s, PortGroupRow, spec.port_group, "port_group")
        await ensure_name_free(s, SubnetRow, spec.name, SUBNET)
        space = ipam.plan(spec.cidr, spec.gateway, spec.no_gateway, _pairs(spec.ranges),
                          spec.reserved)  # fmt: skip
        await _check_overlap(s, group, spec.cidr)
        row = SubnetRow(
            name=spec.name,
            port_group_id=group.id,
            ip_version=space.version,
            cidr=spec.cidr,
            gateway=None if space.gateway is None else space.text(space.gateway),
            dns_servers=list(dict.fromkeys(spec.dns_servers)),
            ranges=space.texts(space.ranges),
            reserved=list(dict.fromkeys(spec.reserved)),
            dhcp=spec.dhcp,
            description=spec.description,
        )
        s.add(row)
        await s.flush()
        op = await finish(svc, s, type="subnet.create", kind=SUBNET, target_id=row.id)
    net_sync.port_groups_changed(svc, [group.id])
    return op


async def update_subnet(*, svc: Services, ref: str, spec: SubnetUpdate) -> Operation:
    """Change the given fields. New ``ranges`` (empty: the default, every host address but the
    gateway) may leave allocated addresses outside: they stay allocated. New ``reserved``
    addresses must not be allocated (``InUse`` listing them)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SubnetRow, ref, SUBNET)
        if spec.name is not None and spec.name != row.name:
            await ensure_name_free(s, SubnetRow, spec.name, SUBNET)
            row.name = spec.name
        if spec.ranges is not None or spec.reserved is not None:
            ranges = row.ranges if spec.ranges is None else _pairs(spec.ranges)
            reserved = row.reserved if spec.reserved is None else spec.reserved
            space = ipam.plan(row.cidr, row.gateway, row.gateway is None, ranges, reserved)
            row.ranges = space.texts(space.ranges)
            if spec.reserved is not None:
                new = sorted(set(spec.reserved) - set(row.reserved))
                taken = list(
                    await s.scalars(
                        select(IpAllocationRow.address).where(
                            IpAllocationRow.subnet_id == row.id, IpAllocationRow.address.in_(new)
                        )
                    )
                )
                if taken:
                    raise InUse(
                        f"addresses to reserve are allocated: {', '.join(sorted(taken))}; "
                        "release them first",
                        reason="address_in_use",
                        addresses=sorted(taken),
                    )
                row.reserved = list(dict.fromkeys(spec.reserved))
        if spec.dns_servers is not None:
            row.dns_servers = list(dict.fromkeys(spec.dns_servers))
        for field in ("description", "dhcp"):
            if (value := getattr(spec, field)) is not None:
                setattr(row, field, value)
        row.updated_at = utcnow()
        op = await finish(svc, s, type="subnet.update", kind=SUBNET, target_id=row.id)
    net_sync.port_groups_changed(svc, [row.port_group_id])
    return op


async def delete_subnet(*, svc: Services, ref: str) -> Operation:
    """Delete a subnet; ``InUse`` while addresses are allocated (the first ones listed, the
    VMs using them)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SubnetRow, ref, SUBNET)
        held = list(
            await s.execute(
                select(IpAllocationRow.address, IpAllocationRow.vm_id).where(
                    IpAllocationRow.subnet_id == row.id, IpAllocationRow.host_id.is_(None)
                )
            )
        )
        if held:
            space = ipam.space_of(row)
            shown = sorted((a for a, _ in held), key=space.parse_stored)[:SHOWN]
            vms = sorted({v for _, v in held if v is not None})
            raise InUse(
                f"subnet {row.name!r} has {len(held)} allocated address(es) "
                f"({', '.join(shown)}{', ...' if len(held) > SHOWN else ''}): release them first",
                allocations=len(held),
                addresses=shown,
                vms=vms[:SHOWN],
            )
        # the hosts' DHCP servers' addresses go with it
        await s.execute(delete(IpAllocationRow).where(IpAllocationRow.subnet_id == row.id))
        await s.delete(row)
        op = await finish(svc, s, type="subnet.delete", kind=SUBNET, target_id=row.id)
    net_sync.port_groups_changed(svc, [row.port_group_id])
    return op


def _allocation(r: IpAllocationRow, *, holders: bool = True) -> IpAllocation:
    return IpAllocation(
        subnet_id=r.subnet_id,
        address=r.address,
        nic_id=r.nic_id if holders else None,
        vm_id=r.vm_id if holders else None,
        created_at=r.created_at,
    )


async def allocations(
    svc: Services, ref: str, *, limit: int, offset: int, holders: bool = True
) -> Page[IpAllocation]:
    """One page of the subnet's allocations in address order (``holders``: with the NIC and VM
    of each, else without)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SubnetRow, ref, SUBNET)
        found = list(
            await s.scalars(select(IpAllocationRow).where(IpAllocationRow.subnet_id == row.id))
        )
    space = ipam.space_of(row)
    found.sort(key=lambda r: space.parse_stored(r.address))
    items = [_allocation(r, holders=holders) for r in found[offset : offset + limit]]
    return Page[IpAllocation](items=items, total=len(found), limit=limit, offset=offset)


async def hold(*, svc: Services, ref: str, address: str | None) -> IpAllocationHeld:
    """Hold an address for later use (``address``, else the lowest free one): ``ipam.allocate``
    with no NIC."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SubnetRow, ref, SUBNET)
        got = await ipam.allocate(s, row, address)
        held = await s.get_one(IpAllocationRow, (row.id, got))
        allocation = _allocation(held)
        op = await finish(svc, s, type="subnet.allocate", kind=SUBNET, target_id=row.id)
    return IpAllocationHeld(**op.model_dump(), allocation=allocation)


async def release_held(*, svc: Services, ref: str, address: str) -> Operation:
    """Release a held address: ``NotFound`` if it is not allocated, ``InUse`` if a NIC uses it
    (it goes with the NIC)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SubnetRow, ref, SUBNET)
        space = ipam.space_of(row)
        try:
            text = space.text(space.parse(address))
        except ValueError:
            raise InvalidInput(
                f"{address!r} is not an IPv{space.version} address", field="address"
            ) from None
        held = await s.get(IpAllocationRow, (row.id, text))
        if held is None:
            raise NotFound(
                f"{text} is not allocated in subnet {row.name!r}",
                kind="ip_allocation",
                ref=text,
            )
        if held.nic_id is not None:
            raise ipam.in_use(row, held)
        await ipam.release(s, row.id, text)
        return await finish(svc, s, type="subnet.release", kind=SUBNET, target_id=row.id)
