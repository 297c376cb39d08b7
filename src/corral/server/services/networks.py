"""Distributed switches and their port groups as management-plane records.

Every change is one transaction that ends with a finished operation (``inventory.finish``). A
switch spans the hosts of its attached clusters; ``uplinks`` name a host's own interface (by
host id or name) instead of the switch's default ``uplink``. A port group's segment rules are one
unique column, ``segment_key`` (``<switch>:flat``, ``<switch>:vlan:<id>``, ``vxlan:<vni>``):
checked first for a clear message, and a parallel request that slips past the check still fails
on the constraint (mapped to the same ``NameTaken``). Nothing is pushed to hosts yet: the data
plane (Open vSwitch, DHCP) is not built.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.errors import InUse, InvalidInput, NameTaken
from corral.api.networks import (
    PortGroup,
    PortGroupCreate,
    PortGroupUpdate,
    SegmentType,
    Switch,
    SwitchCreate,
    SwitchUpdate,
    SwitchUplink,
)
from corral.api.operations import Operation
from corral.server.db.tables import (
    ClusterRow,
    HostRow,
    HostSlotRow,
    NicRow,
    PortGroupRow,
    SubnetRow,
    SwitchClusterRow,
    SwitchRow,
    SwitchUplinkRow,
    VmRow,
)
from corral.server.db.types import utcnow
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.inventory import ensure_name_free, finish
from corral.server.services.listing import Kind, get_row

SWITCH = "switch"
PORT_GROUP = "port_group"
VXLAN_OVERHEAD = 50
"""Bytes a VXLAN encapsulation adds (outer Ethernet, IP, UDP, VXLAN headers)."""


# switches


def switch_model(
    r: SwitchRow, clusters: Sequence[str] = (), uplinks: dict[str, str] | None = None
) -> Switch:
    return Switch(
        id=r.id,
        name=r.name,
        description=r.description,
        uplink=r.uplink,
        uplinks=dict(sorted((uplinks or {}).items())),
        clusters=sorted(clusters),
        mtu=r.mtu,
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


class SwitchKind(Kind[SwitchRow, Switch]):
    """Switches with their attached clusters and per-host uplinks (two queries per page)."""

    async def models(self, s: AsyncSession, rows: list[SwitchRow]) -> list[Switch]:
        ids = [r.id for r in rows]
        clusters: dict[str, list[str]] = {i: [] for i in ids}
        uplinks: dict[str, dict[str, str]] = {i: {} for i in ids}
        if ids:
            for sid, cid in await s.execute(
                select(SwitchClusterRow.switch_id, SwitchClusterRow.cluster_id).where(
                    SwitchClusterRow.switch_id.in_(ids)
                )
            ):
                clusters[sid].append(cid)
            for sid, hid, interface in await s.execute(
                select(
                    SwitchUplinkRow.switch_id, SwitchUplinkRow.host_id, SwitchUplinkRow.interface
                ).where(SwitchUplinkRow.switch_id.in_(ids))
            ):
                uplinks[sid][hid] = interface
        return [switch_model(r, clusters[r.id], uplinks[r.id]) for r in rows]


SWITCHES = SwitchKind(SWITCH, SwitchRow, switch_model, specs.SWITCHES, Switch)


async def _set_uplinks(s: AsyncSession, switch_id: str, uplinks: Sequence[SwitchUplink]) -> None:
    """Replace the switch's per-host uplinks. ``NotFound`` for an unknown host, ``InvalidInput``
    for a host named twice."""
    wanted: dict[str, str] = {}
    twice: list[str] = []
    for u in uplinks:
        host = await get_row(s, HostRow, u.host, "host")
        if host.id in wanted:
            twice.append(host.name)
        wanted[host.id] = u.interface
    if twice:
        raise InvalidInput(
            f"hosts named more than once in uplinks: {', '.join(sorted(set(twice)))}",
            field="uplinks",
            hosts=sorted(set(twice)),
        )
    await s.execute(delete(SwitchUplinkRow).where(SwitchUplinkRow.switch_id == switch_id))
    for host_id, interface in wanted.items():
        s.add(SwitchUplinkRow(switch_id=switch_id, host_id=host_id, interface=interface))


async def _attach(s: AsyncSession, switch_id: str, cluster_ref: str) -> bool:
    """Attach the cluster (``NotFound`` if none); False if it was attached already."""
    cluster = await get_row(s, ClusterRow, cluster_ref, "cluster")
    if await s.get(SwitchClusterRow, (switch_id, cluster.id)) is not None:
        return False
    s.add(SwitchClusterRow(switch_id=switch_id, cluster_id=cluster.id))
    await s.flush()
    return True


async def create_switch(*, svc: Services, spec: SwitchCreate) -> Operation:
    """A new switch attached to ``spec.clusters`` with ``spec.uplinks``. ``NameTaken``,
    ``NotFound`` (a cluster or host) and ``InvalidInput`` create nothing."""
    async with svc.sessionmaker() as s:
        await ensure_name_free(s, SwitchRow, spec.name, SWITCH)
        row = SwitchRow(
            name=spec.name, description=spec.description, uplink=spec.uplink, mtu=spec.mtu
        )
        s.add(row)
        await s.flush()
        for ref in dict.fromkeys(spec.clusters):
            await _attach(s, row.id, ref)
        await _set_uplinks(s, row.id, spec.uplinks)
        return await finish(svc, s, type="switch.create", kind=SWITCH, target_id=row.id)


async def update_switch(*, svc: Services, ref: str, spec: SwitchUpdate) -> Operation:
    """Change the given fields; ``uplinks`` replaces every per-host uplink. The port groups'
    ``mtu`` follows the switch's."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SwitchRow, ref, SWITCH)
        if spec.name is not None and spec.name != row.name:
            await ensure_name_free(s, SwitchRow, spec.name, SWITCH)
            row.name = spec.name
        for field in ("description", "uplink", "mtu"):
            value = getattr(spec, field)
            if value is not None:
                setattr(row, field, value)
        if spec.uplinks is not None:
            await _set_uplinks(s, row.id, spec.uplinks)
        row.updated_at = utcnow()
        return await finish(svc, s, type="switch.update", kind=SWITCH, target_id=row.id)


async def attach_cluster(*, svc: Services, ref: str, cluster: str) -> Operation:
    """Attach a cluster: its hosts carry the switch. Attaching an attached cluster changes
    nothing and is not an error; an unknown cluster is ``NotFound``."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SwitchRow, ref, SWITCH)
        if await _attach(s, row.id, cluster):
            row.updated_at = utcnow()
        return await finish(svc, s, type="switch.attach", kind=SWITCH, target_id=row.id)


async def detach_cluster(*, svc: Services, ref: str, cluster: str) -> Operation:
    """Detach a cluster (not attached: nothing changes; unknown: ``NotFound``); ``InUse``
    listing the VMs of the cluster's hosts with NICs on the switch's port groups."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SwitchRow, ref, SWITCH)
        found = await get_row(s, ClusterRow, cluster, "cluster")
        link = await s.get(SwitchClusterRow, (row.id, found.id))
        users = sorted(
            set(
                await s.scalars(
                    select(VmRow.name)
                    .join(NicRow, NicRow.vm_id == VmRow.id)
                    .join(PortGroupRow, PortGroupRow.id == NicRow.port_group_id)
                    .join(HostRow, HostRow.id == VmRow.host_id)
                    .where(PortGroupRow.switch_id == row.id, HostRow.cluster_id == found.id)
                )
            )
        )
        if link is not None and users:
            raise InUse(
                f"VMs of cluster {found.name!r} have NICs on switch {row.name!r}: "
                f"{', '.join(users[:20])}; remove them first",
                vms=users[:100],
            )
        if link is not None:
            await s.delete(link)
            row.updated_at = utcnow()
        return await finish(svc, s, type="switch.detach", kind=SWITCH, target_id=row.id)


async def delete_switch(*, svc: Services, ref: str) -> Operation:
    """Delete the switch (its cluster links and uplinks go with it); ``InUse`` listing its port
    groups while it has some."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, SwitchRow, ref, SWITCH)
        groups = sorted(
            await s.scalars(select(PortGroupRow.name).where(PortGroupRow.switch_id == row.id))
        )
        if groups:
            raise InUse(
                f"switch {row.name!r} still has {len(groups)} port group(s): "
                f"{', '.join(groups)}; delete them first",
                port_groups=groups,
            )
        await s.delete(row)
        return await finish(svc, s, type="switch.delete", kind=SWITCH, target_id=row.id)


# port groups


def segment_key(switch_id: str, type: SegmentType, segment_id: int | None) -> str:
    """The unique key of a segment: one flat group per switch, a VLAN id once per switch, a
    VNI once in the platform."""
    if type == SegmentType.flat:
        return f"{switch_id}:flat"
    if type == SegmentType.vlan:
        return f"{switch_id}:vlan:{segment_id}"
    return f"vxlan:{segment_id}"


def segment_text(type: SegmentType, segment_id: int | None) -> str:
    """``the flat segment``, ``VLAN 100``, ``VNI 5000``: a segment in a message."""
    if type == SegmentType.flat:
        return "the flat segment"
    return f"{'VLAN' if type == SegmentType.vlan else 'VNI'} {segment_id}"


def port_group_mtu(switch_mtu: int, type: str) -> int:
    return switch_mtu - VXLAN_OVERHEAD if type == SegmentType.vxlan else switch_mtu


def port_group_model(r: PortGroupRow, switch_mtu: int = 1500) -> PortGroup:
    return PortGroup(
        id=r.id,
        name=r.name,
        switch_id=r.switch_id,
        type=SegmentType(r.type),
        segment_id=r.segment_id,
        description=r.description,
        mtu=port_group_mtu(switch_mtu, r.type),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


class PortGroupKind(Kind[PortGroupRow, PortGroup]):
    """Port groups with the MTU of their switch (one more query per page)."""

    async def models(self, s: AsyncSession, rows: list[PortGroupRow]) -> list[PortGroup]:
        ids = {r.switch_id for r in rows}
        mtus: dict[str, int] = {}
        if ids:
            found = await s.execute(
                select(SwitchRow.id, SwitchRow.mtu).where(SwitchRow.id.in_(ids))
            )
            mtus = {sid: mtu for sid, mtu in found}
        return [port_group_model(r, mtus.get(r.switch_id, 1500)) for r in rows]


PORT_GROUPS = PortGroupKind(
    PORT_GROUP, PortGroupRow, port_group_model, specs.PORT_GROUPS, PortGroup
)


def _segment_taken(
    holder: str, switch: str, type: SegmentType, segment_id: int | None
) -> NameTaken:
    where = "the platform" if type == SegmentType.vxlan else f"switch {switch!r}"
    return NameTaken(
        f"{segment_text(type, segment_id)} of {where} is used by port group {holder!r}",
        kind="segment",
        reason="segment_taken",
        port_group=holder,
        type=type.value,
        segment_id=segment_id,
    )


async def _segment_holder(s: AsyncSession, key: str) -> str | None:
    return await s.scalar(select(PortGroupRow.name).where(PortGroupRow.segment_key == key))


async def create_port_group(*, svc: Services, spec: PortGroupCreate) -> Operation:
    """A port group on ``spec.switch``. ``NameTaken`` for a used name, and (``reason=
    "segment_taken"``, naming the port group that holds it) for a second flat group on the
    switch, a VLAN id used on the switch or a VNI used anywhere."""
    async with svc.sessionmaker() as s:
        switch = await get_row(s, SwitchRow, spec.switch, SWITCH)
        await ensure_name_free(s, PortGroupRow, spec.name, PORT_GROUP)
        key = segment_key(switch.id, spec.type, spec.segment_id)
        if (holder := await _segment_holder(s, key)) is not None:
            raise _segment_taken(holder, switch.name, spec.type, spec.segment_id)
        row = PortGroupRow(
            name=spec.name,
            switch_id=switch.id,
            type=spec.type.value,
            segment_id=spec.segment_id,
            segment_key=key,
            description=spec.description,
        )
        s.add(row)
        switch_name = switch.name  # the rollback below expires the rows
        try:
            await s.flush()
        except IntegrityError:  # a parallel request took the name or the segment first
            await s.rollback()
            if (holder := await _segment_holder(s, key)) is not None:
                raise _segment_taken(holder, switch_name, spec.type, spec.segment_id) from None
            raise NameTaken(
                f"a port_group named {spec.name!r} exists already", kind=PORT_GROUP, name=spec.name
            ) from None
        return await finish(svc, s, type="port_group.create", kind=PORT_GROUP, target_id=row.id)


async def update_port_group(*, svc: Services, ref: str, spec: PortGroupUpdate) -> Operation:
    """Rename or describe a port group (its segment never changes)."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, PortGroupRow, ref, PORT_GROUP)
        if spec.name is not None and spec.name != row.name:
            await ensure_name_free(s, PortGroupRow, spec.name, PORT_GROUP)
            row.name = spec.name
        if spec.description is not None:
            row.description = spec.description
        row.updated_at = utcnow()
        return await finish(svc, s, type="port_group.update", kind=PORT_GROUP, target_id=row.id)


async def delete_port_group(*, svc: Services, ref: str) -> Operation:
    """Delete a port group; ``InUse`` listing its subnets while it has some."""
    async with svc.sessionmaker() as s:
        row = await get_row(s, PortGroupRow, ref, PORT_GROUP)
        subnets = sorted(
            await s.scalars(select(SubnetRow.name).where(SubnetRow.port_group_id == row.id))
        )
        if subnets:
            raise InUse(
                f"port group {row.name!r} still has {len(subnets)} subnet(s): "
                f"{', '.join(subnets)}; delete them first",
                subnets=subnets,
            )
        vms = sorted(
            set(
                await s.scalars(
                    select(VmRow.name)
                    .join(NicRow, NicRow.vm_id == VmRow.id)
                    .where(NicRow.port_group_id == row.id)
                )
            )
        )
        if vms:
            raise InUse(
                f"port group {row.name!r} has NICs of VMs {', '.join(vms[:20])}: remove them first",
                vms=vms[:100],
            )
        await s.execute(
            delete(HostSlotRow).where(HostSlotRow.kind == "tag", HostSlotRow.owner_id == row.id)
        )
        await s.delete(row)
        return await finish(svc, s, type="port_group.delete", kind=PORT_GROUP, target_id=row.id)
