"""VM NICs in the database: checking what is asked (``plan_nics``), recording NICs with their
addresses and security groups (``record_nics``), forgetting them (``forget_nics``), and the API
model (``nic_models``).

Everything here runs in the caller's transaction: a VM's NICs are recorded with the VM (or with
a hot-plug's operation) and forgotten with it, so their addresses are never held by a NIC that
does not exist.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import nic_port_name
from corral.api.errors import InUse, InvalidInput, NoHostAvailable
from corral.api.nics import AllowedPair, Nic, NicCreate
from corral.server.db.tables import (
    HostRow,
    HostSlotRow,
    IpAllocationRow,
    NicRow,
    NicSecurityGroupRow,
    PortGroupRow,
    SubnetRow,
    SwitchClusterRow,
)
from corral.server.db.types import new_id
from corral.server.identity.caller import Caller
from corral.server.services import ipam
from corral.server.services.listing import get_row
from corral.server.services.sg_rules import resolve_remote


@dataclass
class NicPlan:
    """A checked ``NicCreate``: its port group, the subnets to allocate one address from, the
    static addresses (with their subnet), its groups (ids, in order) and its MAC."""

    spec: NicCreate
    port_group: PortGroupRow
    dynamic: list[SubnetRow] = field(default_factory=list)
    static: list[tuple[SubnetRow, str]] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    mac: str = ""


def new_mac() -> str:
    """A random unicast, locally administered MAC (``02:`` and 40 random bits)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def _subnet_of(subnets: Sequence[SubnetRow], address: str) -> SubnetRow | None:
    ip = ipaddress.ip_address(address)
    for sn in subnets:
        if ip in ipaddress.ip_network(sn.cidr):
            return sn
    return None


async def plan_nics(
    s: AsyncSession,
    specs: Sequence[NicCreate],
    caller: Caller,
    project_id: str | None,
    *,
    taken_macs: Sequence[str] = (),
) -> list[NicPlan]:
    """Check ``specs`` (NICs of one VM of ``project_id``) without writing: port groups and
    subnets exist (a subnet of another port group, or a static address outside the port
    group's subnets, is ``InvalidInput``), at most one address per subnet, security groups of
    the project the caller sees (``NotFound`` / ``InvalidInput``), MACs not in use (``InUse``,
    ``reason: mac_in_use``) nor given twice."""
    plans: list[NicPlan] = []
    macs = set(taken_macs)
    for i, spec in enumerate(specs):
        pg = await get_row(s, PortGroupRow, spec.port_group, "port_group")
        subnets = list(
            await s.scalars(
                select(SubnetRow).where(SubnetRow.port_group_id == pg.id).order_by(SubnetRow.cidr)
            )
        )
        plan = NicPlan(spec=spec, port_group=pg)
        for address in spec.ips:
            sn = _subnet_of(subnets, address)
            if sn is None:
                raise InvalidInput(
                    f"NIC {i}: {address} is in no subnet of port group {pg.name!r}",
                    nic=i,
                    address=address,
                )
            plan.static.append((sn, address))
        if spec.subnets is None:
            chosen = subnets
        else:
            chosen = []
            for ref in spec.subnets:
                sn = await get_row(s, SubnetRow, ref, "subnet")
                if sn.port_group_id != pg.id:
                    raise InvalidInput(
                        f"NIC {i}: subnet {sn.name!r} is not on port group {pg.name!r}",
                        nic=i,
                        subnet=sn.name,
                    )
                chosen.append(sn)
        static_ids = [sn.id for sn, _ in plan.static]
        if len(set(static_ids)) != len(static_ids) or len({x.id for x in chosen}) != len(chosen):
            raise InvalidInput(f"NIC {i}: one address per subnet", nic=i)
        plan.dynamic = [sn for sn in chosen if sn.id not in static_ids]
        plan.groups = await resolve_groups(s, spec.security_groups, caller, project_id)
        plan.mac = spec.mac or new_mac()
        if plan.mac in macs or await s.scalar(select(NicRow.id).where(NicRow.mac == plan.mac)):
            raise InUse(f"MAC {plan.mac} is in use", reason="mac_in_use", mac=plan.mac)
        macs.add(plan.mac)
        plans.append(plan)
    return plans


async def nic_hosts(s: AsyncSession, plans: Sequence[NicPlan]) -> frozenset[str] | None:
    """The hosts that carry every switch of ``plans`` (hosts of clusters attached to it); None:
    no NICs (no restriction). ``NoHostAvailable`` if no host carries them all."""
    switches = {p.port_group.switch_id for p in plans}
    if not switches:
        return None
    hosts: set[str] | None = None
    for switch_id in switches:
        found = set(
            await s.scalars(
                select(HostRow.id)
                .join(SwitchClusterRow, SwitchClusterRow.cluster_id == HostRow.cluster_id)
                .where(SwitchClusterRow.switch_id == switch_id)
            )
        )
        hosts = found if hosts is None else hosts & found
    if not hosts:
        names = sorted({p.port_group.name for p in plans})
        raise NoHostAvailable(
            f"no host carries the switches of port groups {', '.join(names)} (attach the "
            "switches to the cluster of a host)",
            port_groups=names,
        )
    return frozenset(hosts)


async def record_nics(
    s: AsyncSession, vm_id: str, plans: Sequence[NicPlan], *, first_position: int = 0
) -> list[str]:
    """Insert the NICs of ``plans`` for VM ``vm_id`` (positions from ``first_position``),
    their security groups and their addresses (static ones first: ``InUse`` if taken;
    ``Conflict`` ``subnet_full``); their ids in order."""
    ids: list[str] = []
    for offset, plan in enumerate(plans):
        nic_id = new_id()
        spec = plan.spec
        await s.execute(
            insert(NicRow).values(
                id=nic_id,
                vm_id=vm_id,
                port_group_id=plan.port_group.id,
                position=first_position + offset,
                mac=plan.mac,
                model=spec.model,
                ingress_default=spec.ingress_default,
                egress_default=spec.egress_default,
                spoof_check=spec.spoof_check,
                allowed_pairs=[[p.mac, p.cidr] for p in spec.allowed_pairs],
                inbound_kbps=spec.inbound_kbps,
                outbound_kbps=spec.outbound_kbps,
            )
        )
        await set_groups(s, nic_id, plan.groups)
        for sn, address in plan.static:
            await ipam.allocate(s, sn, address, nic_id=nic_id, vm_id=vm_id)
        for sn in plan.dynamic:
            await ipam.allocate(s, sn, nic_id=nic_id, vm_id=vm_id)
        ids.append(nic_id)
    return ids


async def forget_nics(s: AsyncSession, vm_id: str, nic_ids: Sequence[str] | None = None) -> int:
    """Delete the VM's NICs (``nic_ids``; None: all), their addresses, group links and
    host-local numbers (conntrack zones), in the caller's transaction; how many NICs."""
    cond = NicRow.vm_id == vm_id
    if nic_ids is not None:
        cond = cond & NicRow.id.in_(nic_ids)
    ids = list(await s.scalars(select(NicRow.id).where(cond)))
    if not ids:
        return 0
    await s.execute(delete(IpAllocationRow).where(IpAllocationRow.nic_id.in_(ids)))
    await s.execute(delete(NicSecurityGroupRow).where(NicSecurityGroupRow.nic_id.in_(ids)))
    await s.execute(
        delete(HostSlotRow).where(HostSlotRow.kind == "zone", HostSlotRow.owner_id.in_(ids))
    )
    await s.execute(delete(NicRow).where(NicRow.id.in_(ids)))
    return len(ids)


async def nic_addresses(s: AsyncSession, nic_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each NIC's addresses (by subnet), every id of ``nic_ids`` a key."""
    found: dict[str, list[str]] = {i: [] for i in nic_ids}
    for nic_id, address in await s.execute(
        select(IpAllocationRow.nic_id, IpAllocationRow.address)
        .where(IpAllocationRow.nic_id.in_(nic_ids))
        .order_by(IpAllocationRow.subnet_id)
    ):
        if nic_id is not None:
            found[nic_id].append(address)
    return found


async def nic_groups(s: AsyncSession, nic_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each NIC's security group ids in evaluation order, every id of ``nic_ids`` a key."""
    found: dict[str, list[str]] = {i: [] for i in nic_ids}
    for nic_id, gid in await s.execute(
        select(NicSecurityGroupRow.nic_id, NicSecurityGroupRow.group_id)
        .where(NicSecurityGroupRow.nic_id.in_(nic_ids))
        .order_by(NicSecurityGroupRow.position)
    ):
        found[nic_id].append(gid)
    return found


async def resolve_groups(
    s: AsyncSession, refs: Sequence[str], caller: Caller, project_id: str | None
) -> list[str]:
    """The ids of security groups ``refs`` (of ``project_id``, seen by ``caller``: see
    ``resolve_remote``), in order; ``InvalidInput`` for a group given twice."""
    ids: list[str] = []
    for ref in refs:
        gid = await resolve_remote(s, ref, caller, project_id)
        if gid in ids:
            raise InvalidInput(f"security group {ref!r} given twice", security_group=ref)
        ids.append(gid)
    return ids


async def set_groups(s: AsyncSession, nic_id: str, group_ids: Sequence[str]) -> None:
    """Make ``group_ids`` the NIC's security groups, in that order."""
    await s.execute(delete(NicSecurityGroupRow).where(NicSecurityGroupRow.nic_id == nic_id))
    if group_ids:
        await s.execute(
            insert(NicSecurityGroupRow),
            [{"nic_id": nic_id, "group_id": g, "position": n} for n, g in enumerate(group_ids)],
        )


def nic_model(row: NicRow, ips: Sequence[str], groups: Sequence[str]) -> Nic:
    return Nic(
        id=row.id,
        vm_id=row.vm_id,
        device=row.position,
        port_group_id=row.port_group_id,
        mac=row.mac,
        model=row.model,
        ips=list(ips),
        security_groups=list(groups),
        ingress_default=row.ingress_default,
        egress_default=row.egress_default,
        spoof_check=row.spoof_check,
        allowed_pairs=[AllowedPair(mac=m, cidr=c) for m, c in row.allowed_pairs],
        inbound_kbps=row.inbound_kbps,
        outbound_kbps=row.outbound_kbps,
        port=nic_port_name(row.id),
    )


async def nic_models(
    s: AsyncSession, vm_id: str, nic_ids: Sequence[str] | None = None
) -> list[Nic]:
    """The VM's NICs (``nic_ids``: only these), in device order, with addresses and groups."""
    cond = NicRow.vm_id == vm_id
    if nic_ids is not None:
        cond = cond & NicRow.id.in_(nic_ids)
    rows = list(await s.scalars(select(NicRow).where(cond).order_by(NicRow.position)))
    ids = [r.id for r in rows]
    ips, groups = await nic_addresses(s, ids), await nic_groups(s, ids)
    return [nic_model(r, ips[r.id], groups[r.id]) for r in rows]


async def clone_plans(s: AsyncSession, vm_id: str) -> list[NicPlan]:
    """Plans for NICs like VM ``vm_id``'s, in device order, for a clone: the same port groups,
    security groups, policies, model and limits, a new MAC each, and one new address from each
    subnet the source NIC has one in."""
    plans: list[NicPlan] = []
    rows = list(
        await s.scalars(select(NicRow).where(NicRow.vm_id == vm_id).order_by(NicRow.position))
    )
    groups = await nic_groups(s, [r.id for r in rows])
    for row in rows:
        pg = await s.get(PortGroupRow, row.port_group_id)
        if pg is None:
            continue
        subnets = list(
            await s.scalars(
                select(SubnetRow)
                .join(IpAllocationRow, IpAllocationRow.subnet_id == SubnetRow.id)
                .where(IpAllocationRow.nic_id == row.id)
                .order_by(SubnetRow.cidr)
            )
        )
        spec = NicCreate(
            port_group=pg.id,
            model=row.model,
            ingress_default=row.ingress_default,
            egress_default=row.egress_default,
            spoof_check=row.spoof_check,
            allowed_pairs=[AllowedPair(mac=m, cidr=c) for m, c in row.allowed_pairs],
            inbound_kbps=row.inbound_kbps,
            outbound_kbps=row.outbound_kbps,
        )
        plans.append(
            NicPlan(spec=spec, port_group=pg, dynamic=subnets, groups=groups[row.id], mac=new_mac())
        )
    return plans
