"""The network controller: what one host's network must be (``host_state``), computed from the
database, and the NIC definitions a VM gets there (``nic_specs``).

A host's state (``corral.api.agent.NetworkApply``) covers the NICs of the VMs placed on it
(whatever their power state):

- **segments**: every port group those NICs are on, with its host-local VLAN tag (a
  ``HostSlotRow`` ``tag``, kept while the host has NICs of the group... and after: tags are
  cheap and a stable tag never re-plugs a port), and for VXLAN the tunnel IPs of the other hosts
  with NICs on it (``HostFacts.tunnel_ip``);
- **uplink**: the switch's interface on this host for flat and VLAN segments;
- **dhcp**: for every port group with ``dhcp`` subnets, the host's own DHCP server (one
  address of each such subnet held for the host: an ``IpAllocationRow`` with ``host_id``) and
  the MAC → address entries of the host's NICs;
- **ports**: each NIC's firewall flows (``corral.netflows.firewall``), its conntrack zone a
  ``HostSlotRow`` ``zone`` (also the flows' cookie), its groups' rules with remote groups
  resolved to their members' addresses, and its bandwidth limits as OpenFlow meters
  ``2 * zone`` (outbound) and ``2 * zone + 1`` (inbound).

Host-local numbers are claimed in the caller's transaction (lowest free, a primary key against
races; a lost race re-reads and retries). Pure computation is in ``corral.netflows``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import NetworkApply, NicSpec, PortFlows, meter_for, nic_port_name
from corral.api.errors import Conflict
from corral.api.host_network import DhcpHost, DhcpSegment, DhcpSubnet, Segment, Uplink
from corral.api.networks import SegmentType
from corral.netflows.firewall import FwGroup, FwPort, FwRule, compile_port
from corral.server.db.tables import (
    HostRow,
    HostSlotRow,
    IpAllocationRow,
    NicRow,
    NicSecurityGroupRow,
    PortGroupRow,
    SecurityGroupRow,
    SecurityGroupRuleRow,
    SubnetRow,
    SwitchRow,
    SwitchUplinkRow,
    VmRow,
)
from corral.server.services import ipam
from corral.server.services.networks import port_group_mtu
from corral.server.services.nics import nic_addresses, nic_groups

log = logging.getLogger(__name__)

TAGS = (1, 4094)
ZONES = (1, 65535)
MAX_ATTEMPTS = 8
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


async def claim_slots(
    s: AsyncSession, host_id: str, kind: str, owners: Iterable[str], bounds: tuple[int, int]
) -> dict[str, int]:
    """The host-local number of each owner (``kind`` ``tag`` or ``zone``), claiming the lowest
    free ones for owners without one. ``Conflict`` when the host has none left."""
    wanted = sorted(set(owners))
    for _ in range(MAX_ATTEMPTS):
        rows = await s.execute(
            select(HostSlotRow.owner_id, HostSlotRow.number).where(
                HostSlotRow.host_id == host_id, HostSlotRow.kind == kind
            )
        )
        have = {o: n for o, n in rows}
        missing = [o for o in wanted if o not in have]
        if not missing:
            return {o: have[o] for o in wanted}
        used = set(have.values())
        free: list[int] = []
        n = bounds[0]
        while len(free) < len(missing) and n <= bounds[1]:
            if n not in used:
                free.append(n)
            n += 1
        if len(free) < len(missing):
            raise Conflict(
                f"host {host_id} has no {kind} left ({bounds[0]}-{bounds[1]})",
                reason=f"no_{kind}_left",
                host_id=host_id,
            )
        values = [
            {"host_id": host_id, "kind": kind, "number": num, "owner_id": owner}
            for owner, num in zip(missing, free, strict=True)
        ]
        try:
            async with s.begin_nested():
                await s.execute(insert(HostSlotRow), values)
        except IntegrityError:
            continue  # another claim got there first: read again
    raise Conflict(
        f"host {host_id}: {kind} numbers could not be claimed (contention): retry",
        reason="allocation_contention",
    )


async def port_group_mtus(s: AsyncSession, pg_ids: Iterable[str]) -> dict[str, int]:
    """The MTU of each port group's VM ports (``port_group_mtu`` of its switch's)."""
    rows = await s.execute(
        select(PortGroupRow.id, SwitchRow.mtu, PortGroupRow.type)
        .join(SwitchRow, SwitchRow.id == PortGroupRow.switch_id)
        .where(PortGroupRow.id.in_(set(pg_ids)))
    )
    return {pg: port_group_mtu(mtu, kind) for pg, mtu, kind in rows}


async def nic_specs(s: AsyncSession, vm_id: str, host_id: str) -> list[NicSpec]:
    """The VM's NICs as the agent defines them on ``host_id`` (claiming the tags of their port
    groups there), in device order. Their bandwidth limits are not libvirt's: OpenFlow meters
    in the flows (``host_state``) limit both directions on any datapath."""
    nics = list(
        await s.scalars(select(NicRow).where(NicRow.vm_id == vm_id).order_by(NicRow.position))
    )
    if not nics:
        return []
    pgs = {
        pg.id: pg
        for pg in await s.scalars(
            select(PortGroupRow).where(PortGroupRow.id.in_({n.port_group_id for n in nics}))
        )
    }
    tags = await claim_slots(s, host_id, "tag", pgs, TAGS)
    mtus = await port_group_mtus(s, pgs)
    return [
        NicSpec(
            nic_id=n.id,
            mac=n.mac,
            model=n.model,
            tag=tags[n.port_group_id],
            mtu=mtus[n.port_group_id],
        )
        for n in nics
    ]


def hostname_of(name: str) -> str | None:
    """A VM name as one DNS label (lower case, other characters as dashes); None if it makes
    none."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    if not _LABEL.match(label) or label.isdigit():
        return None
    return label


async def _remotes(s: AsyncSession, host_id: str, pg_ids: Sequence[str]) -> dict[str, list[str]]:
    """Per VXLAN port group: the tunnel IPs of the other hosts with NICs on it."""
    if not pg_ids:
        return {}
    rows = await s.execute(
        select(NicRow.port_group_id, HostRow.id, HostRow.facts)
        .join(VmRow, VmRow.id == NicRow.vm_id)
        .join(HostRow, HostRow.id == VmRow.host_id)
        .where(NicRow.port_group_id.in_(pg_ids), HostRow.id != host_id)
        .distinct()
    )
    out: dict[str, set[str]] = defaultdict(set)
    for pg_id, other, facts in rows:
        ip = (facts or {}).get("tunnel_ip")
        if ip:
            out[pg_id].add(ip)
        else:
            log.info("host %s has no tunnel IP: no VXLAN tunnel to it", other)
    return {k: sorted(v, key=ipaddress.ip_address) for k, v in out.items()}


async def _uplink(s: AsyncSession, host_id: str, pgs: Sequence[PortGroupRow]) -> Uplink | None:
    switch_ids = sorted({pg.switch_id for pg in pgs if pg.type != SegmentType.vxlan})
    if not switch_ids:
        return None
    names: set[str] = set()
    for sid in switch_ids:
        own = await s.scalar(
            select(SwitchUplinkRow.interface).where(
                SwitchUplinkRow.switch_id == sid, SwitchUplinkRow.host_id == host_id
            )
        )
        default = await s.scalar(select(SwitchRow.uplink).where(SwitchRow.id == sid))
        names.add(own or default or "eth0")
    if len(names) > 1:
        log.warning(
            "host %s: flat/VLAN port groups of switches with different uplinks (%s): only %s"
            " is used",
            host_id,
            ", ".join(sorted(names)),
            min(names),
        )
    return Uplink(interface=min(names))


async def _dhcp_server_address(s: AsyncSession, host_id: str, sn: SubnetRow) -> str | None:
    have = await s.scalar(
        select(IpAllocationRow.address).where(
            IpAllocationRow.subnet_id == sn.id, IpAllocationRow.host_id == host_id
        )
    )
    if have is not None:
        return have
    try:
        return await ipam.allocate(s, sn, host_id=host_id)
    except Conflict as exc:
        log.warning("subnet %s: no address for host %s's DHCP server: %s", sn.name, host_id, exc)
        return None


async def _dhcp(
    s: AsyncSession,
    host_id: str,
    pgs: Sequence[PortGroupRow],
    tags: dict[str, int],
    nics: Sequence[tuple[NicRow, str]],
    ips: dict[str, list[str]],
    mtus: dict[str, int],
) -> list[DhcpSegment]:
    subnets = list(
        await s.scalars(
            select(SubnetRow)
            .where(SubnetRow.port_group_id.in_([pg.id for pg in pgs]), SubnetRow.dhcp.is_(True))
            .order_by(SubnetRow.cidr)
        )
    )
    out: list[DhcpSegment] = []
    for pg in pgs:
        served: list[DhcpSubnet] = []
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for sn in (x for x in subnets if x.port_group_id == pg.id):
            server = await _dhcp_server_address(s, host_id, sn)
            if server is None:
                continue
            served.append(
                DhcpSubnet.model_validate(
                    {
                        "cidr": sn.cidr,
                        "server_address": server,
                        "gateway": sn.gateway if sn.ip_version == 4 else None,
                        "dns_servers": sn.dns_servers,
                    }
                )
            )
            nets.append(ipaddress.ip_network(sn.cidr))
        if not served:
            continue
        hosts: dict[str, DhcpHost] = {}
        for nic, vm_name in nics:
            if nic.port_group_id != pg.id:
                continue
            v4 = v6 = None
            for a in ips.get(nic.id, []):
                ip = ipaddress.ip_address(a)
                if not any(ip in n for n in nets):
                    continue
                if ip.version == 4 and v4 is None:
                    v4 = ip
                elif ip.version == 6 and v6 is None:
                    v6 = ip
            if v4 is not None or v6 is not None:
                hosts[nic.mac] = DhcpHost(ipv4=v4, ipv6=v6, hostname=hostname_of(vm_name))
        out.append(
            DhcpSegment(
                port_group_id=pg.id,
                bridge="br-int",
                tag=tags[pg.id],
                subnets=served,
                mtu=mtus[pg.id],
                hosts=hosts,
            )
        )
    return out


async def _groups(
    s: AsyncSession, nic_ids: Sequence[str]
) -> tuple[dict[str, list[str]], dict[str, FwGroup]]:
    """Each NIC's group ids in order, and each of those groups compiled for the firewall
    (remote groups and members resolved to addresses)."""
    per_nic = await nic_groups(s, nic_ids)
    used = {g for gs in per_nic.values() for g in gs}
    if not used:
        return per_nic, {}
    rules = list(
        await s.scalars(
            select(SecurityGroupRuleRow)
            .where(SecurityGroupRuleRow.group_id.in_(used))
            .order_by(SecurityGroupRuleRow.group_id, SecurityGroupRuleRow.priority)
        )
    )
    wanted = used | {r.remote_group_id for r in rules if r.remote_group_id}
    members: dict[str, list[str]] = defaultdict(list)
    for gid, address in await s.execute(
        select(NicSecurityGroupRow.group_id, IpAllocationRow.address)
        .join(IpAllocationRow, IpAllocationRow.nic_id == NicSecurityGroupRow.nic_id)
        .where(NicSecurityGroupRow.group_id.in_(wanted))
        .order_by(IpAllocationRow.address)
    ):
        members[gid].append(address)
    intra = dict(
        (
            await s.execute(
                select(SecurityGroupRow.id, SecurityGroupRow.intra_group).where(
                    SecurityGroupRow.id.in_(used)
                )
            )
        ).all()
    )
    by_group: dict[str, list[FwRule]] = defaultdict(list)
    for r in rules:
        if r.remote_group_id:
            remotes: tuple[str, ...] | None = tuple(members.get(r.remote_group_id, ()))
        elif r.remote_cidr:
            remotes = (r.remote_cidr,)
        else:
            remotes = None
        by_group[r.group_id].append(
            FwRule(
                direction=r.direction,
                ethertype=r.ethertype,
                protocol=r.protocol,
                port_min=r.port_min,
                port_max=r.port_max,
                remotes=remotes,
                action=r.action,
            )
        )
    compiled = {
        g: FwGroup(
            rules=tuple(by_group.get(g, ())),
            intra_group=bool(intra.get(g, True)),
            members=tuple(members.get(g, ())),
        )
        for g in used
    }
    return per_nic, compiled


async def host_state(s: AsyncSession, host_id: str, generation: int) -> NetworkApply:
    """Everything host ``host_id`` needs (see the module docstring), claiming its host-local
    numbers and DHCP server addresses in ``s`` (the caller commits)."""
    nics = [
        (nic, vm_name)
        for nic, vm_name in await s.execute(
            select(NicRow, VmRow.name)
            .join(VmRow, VmRow.id == NicRow.vm_id)
            .where(VmRow.host_id == host_id)
            .order_by(NicRow.id)
        )
    ]
    if not nics:
        return NetworkApply(generation=generation)
    nic_ids = [n.id for n, _ in nics]
    pgs = list(
        await s.scalars(
            select(PortGroupRow)
            .where(PortGroupRow.id.in_({n.port_group_id for n, _ in nics}))
            .order_by(PortGroupRow.id)
        )
    )
    tags = await claim_slots(s, host_id, "tag", [pg.id for pg in pgs], TAGS)
    zones = await claim_slots(s, host_id, "zone", nic_ids, ZONES)
    mtus = await port_group_mtus(s, [pg.id for pg in pgs])
    remotes = await _remotes(s, host_id, [pg.id for pg in pgs if pg.type == SegmentType.vxlan])
    segments = [
        Segment(
            port_group_id=pg.id,
            type=SegmentType(pg.type),
            segment_id=pg.segment_id,
            local_tag=tags[pg.id],
            remotes=remotes.get(pg.id, []) if pg.type == SegmentType.vxlan else [],
        )
        for pg in pgs
    ]
    ips = await nic_addresses(s, nic_ids)
    per_nic, groups = await _groups(s, nic_ids)
    ports: list[PortFlows] = []
    for nic, _ in nics:
        zone = zones[nic.id]
        fw = FwPort(
            ofport=nic_port_name(nic.id),
            mac=nic.mac,
            ips=tuple(ips.get(nic.id, ())),
            zone=zone,
            cookie=zone,
            groups=tuple(groups[g] for g in per_nic.get(nic.id, ())),
            ingress_default=nic.ingress_default,
            egress_default=nic.egress_default,
            spoof_check=nic.spoof_check,
            allowed_pairs=tuple((m or nic.mac, c) for m, c in nic.allowed_pairs),
            tag=tags[nic.port_group_id],
            outbound_meter=2 * zone if nic.outbound_kbps else None,
            inbound_meter=2 * zone + 1 if nic.inbound_kbps else None,
        )
        meters = [
            meter_for(m, kbps)
            for m, kbps in (
                (fw.outbound_meter, nic.outbound_kbps),
                (fw.inbound_meter, nic.inbound_kbps),
            )
            if m is not None and kbps
        ]
        ports.append(PortFlows(port=nic_port_name(nic.id), flows=compile_port(fw), meters=meters))
    return NetworkApply(
        generation=generation,
        segments=segments,
        uplink=await _uplink(s, host_id, pgs),
        dhcp=await _dhcp(s, host_id, pgs, tags, nics, ips, mtus),
        ports=ports,
    )


async def hosts_of_port_groups(s: AsyncSession, pg_ids: Iterable[str]) -> set[str]:
    """Hosts with NICs on these port groups."""
    ids = list(pg_ids)
    if not ids:
        return set()
    rows = await s.scalars(
        select(VmRow.host_id)
        .join(NicRow, NicRow.vm_id == VmRow.id)
        .where(NicRow.port_group_id.in_(ids), VmRow.host_id.is_not(None))
        .distinct()
    )
    return {h for h in rows if h}


async def hosts_of_groups(s: AsyncSession, group_ids: Iterable[str]) -> set[str]:
    """Hosts whose flows depend on these security groups: hosts of NICs in them, and of NICs
    in groups whose rules name them as remote group (their members' addresses)."""
    ids = set(group_ids)
    if not ids:
        return set()
    referring = set(
        await s.scalars(
            select(SecurityGroupRuleRow.group_id).where(
                SecurityGroupRuleRow.remote_group_id.in_(ids)
            )
        )
    )
    rows = await s.scalars(
        select(VmRow.host_id)
        .join(NicRow, NicRow.vm_id == VmRow.id)
        .join(NicSecurityGroupRow, NicSecurityGroupRow.nic_id == NicRow.id)
        .where(NicSecurityGroupRow.group_id.in_(ids | referring), VmRow.host_id.is_not(None))
        .distinct()
    )
    return {h for h in rows if h}
