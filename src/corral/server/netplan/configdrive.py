"""The NoCloud config drive of a VM with NICs (``corral.api.agent.ConfigDrive``): its identity
and its network configuration (cloud-init network config version 2), so that a guest with
cloud-init configures its addresses where no DHCP serves them (subnets with ``dhcp`` off get
static addresses, routes and DNS servers; subnets with DHCP are left to it).

The documents are JSON (a subset of YAML: cloud-init reads them as YAML), deterministic for
equal input. NICs are matched by MAC and named ``eth<device>``. IPv6 subnets with DHCP also
get their default route here (DHCPv6 has no router option and Corral sends no router
advertisements).
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.agent import ConfigDrive
from corral.server.db.tables import (
    IpAllocationRow,
    NicRow,
    SubnetRow,
    VmRow,
)
from corral.server.netplan.controller import hostname_of, port_group_mtus


def _ethernet(nic: NicRow, subnets: list[tuple[SubnetRow, str]], mtu: int) -> dict[str, Any]:
    eth: dict[str, Any] = {"match": {"macaddress": nic.mac}, "set-name": f"eth{nic.position}"}
    eth["mtu"] = mtu
    addresses: list[str] = []
    routes: list[dict[str, str]] = []
    dns: list[str] = []
    for sn, address in subnets:
        if sn.dhcp:
            eth["dhcp4" if sn.ip_version == 4 else "dhcp6"] = True
            if sn.ip_version == 6 and sn.gateway:
                # DHCPv6 gives no route and Corral sends no router advertisements
                routes.append({"to": "::/0", "via": sn.gateway})
            continue
        prefix = ipaddress.ip_network(sn.cidr).prefixlen
        addresses.append(f"{address}/{prefix}")
        if sn.gateway:
            routes.append({"to": "default" if sn.ip_version == 4 else "::/0", "via": sn.gateway})
        dns.extend(d for d in sn.dns_servers if d not in dns)
    if addresses:
        eth["addresses"] = addresses
    if routes:
        eth["routes"] = routes
    if dns:
        eth["nameservers"] = {"addresses": dns}
    if not subnets:
        eth["dhcp4"] = False
    return eth


async def config_drive(s: AsyncSession, vm: VmRow) -> ConfigDrive | None:
    """The VM's config drive; None when it has no NICs."""
    nics = list(
        await s.scalars(select(NicRow).where(NicRow.vm_id == vm.id).order_by(NicRow.position))
    )
    if not nics:
        return None
    held: dict[str, list[tuple[SubnetRow, str]]] = defaultdict(list)
    rows = await s.execute(
        select(IpAllocationRow.nic_id, IpAllocationRow.address, SubnetRow)
        .join(SubnetRow, SubnetRow.id == IpAllocationRow.subnet_id)
        .where(IpAllocationRow.nic_id.in_([n.id for n in nics]))
        .order_by(SubnetRow.ip_version, SubnetRow.cidr)
    )
    for nic_id, address, sn in rows:
        if nic_id is not None:
            held[nic_id].append((sn, address))
    mtus = await port_group_mtus(s, {n.port_group_id for n in nics})
    network = {
        "version": 2,
        "ethernets": {
            f"eth{n.position}": _ethernet(n, held.get(n.id, []), mtus.get(n.port_group_id, 1500))
            for n in nics
        },
    }
    meta: dict[str, str] = {"instance-id": vm.id}
    if (name := hostname_of(vm.name)) is not None:
        meta["local-hostname"] = name
    return ConfigDrive(
        meta_data=json.dumps(meta, indent=1, sort_keys=True) + "\n",
        network_config=json.dumps(network, indent=1, sort_keys=True) + "\n",
    )
