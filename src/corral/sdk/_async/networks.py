"""Networks (``client.switches``, ``client.port_groups``, ``client.subnets``): distributed
switches, their port groups and the subnets (IP pools) on them, with held addresses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from corral.api.common import MAX_PAGE, Page
from corral.api.networks import (
    IpAllocation,
    IpAllocationHeld,
    IpAllocationRequest,
    IpRange,
    PortGroup,
    PortGroupCreate,
    PortGroupUpdate,
    Subnet,
    SubnetCreate,
    SubnetUpdate,
    Switch,
    SwitchCreate,
    SwitchUpdate,
    SwitchUplink,
)
from corral.sdk._async.operation import AsyncOperation
from corral.sdk._async.resources import AsyncCollection
from corral.sdk._base import build, parse, parse_page, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient

Uplinks = Mapping[str, str]
"""Per-host uplink interfaces: host id or name -> interface."""
Ranges = Sequence[tuple[str, str]]
"""Allocation ranges: (first, last) address pairs."""


def _uplinks(uplinks: Uplinks | None) -> list[SwitchUplink] | None:
    if uplinks is None:
        return None
    return [SwitchUplink(host=h, interface=i) for h, i in uplinks.items()]


def _ranges(ranges: Ranges | None) -> list[IpRange] | None:
    return None if ranges is None else [IpRange(start=a, end=b) for a, b in ranges]


class AsyncSwitches(AsyncCollection[Switch]):
    """``client.switches``: distributed switches (platform admins)."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/switches", Switch)

    async def create(
        self,
        name: str,
        *,
        uplink: str = "eth0",
        uplinks: Uplinks | None = None,
        clusters: Sequence[str] = (),
        mtu: int = 1500,
        description: str = "",
    ) -> AsyncOperation:
        """A switch on the hosts of ``clusters`` (ids or names); ``uplink`` is the host
        interface used unless ``uplinks`` names another for a host."""
        body = build(
            SwitchCreate,
            name=name,
            uplink=uplink,
            uplinks=_uplinks(uplinks) or [],
            clusters=list(clusters),
            mtu=mtu,
            description=description,
        )
        return await self._client.operation("POST", self._path, body=body)

    async def update(
        self,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        uplink: str | None = None,
        uplinks: Uplinks | None = None,
        mtu: int | None = None,
    ) -> AsyncOperation:
        """Change the given fields (``None``: unchanged); ``uplinks`` replaces them all."""
        body = build(
            SwitchUpdate,
            name=name,
            description=description,
            uplink=uplink,
            uplinks=_uplinks(uplinks),
            mtu=mtu,
        )
        return await self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)

    async def attach_cluster(self, ref: str, cluster: str) -> AsyncOperation:
        """Attach a cluster (id or name): its hosts carry the switch."""
        return await self._client.operation(
            "POST", f"{self._path}/{quote_ref(ref)}/clusters/{quote_ref(cluster)}"
        )

    async def detach_cluster(self, ref: str, cluster: str) -> AsyncOperation:
        """Detach a cluster (id or name) from the switch."""
        return await self._client.operation(
            "DELETE", f"{self._path}/{quote_ref(ref)}/clusters/{quote_ref(cluster)}"
        )


class AsyncPortGroups(AsyncCollection[PortGroup]):
    """``client.port_groups``: the L2 segments of switches (``list(switch="sw1")`` filters)."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/port-groups", PortGroup)

    async def create(
        self,
        name: str,
        *,
        switch: str,
        type: str,
        segment_id: int | None = None,
        description: str = "",
    ) -> AsyncOperation:
        """A port group of ``type`` flat, vlan (``segment_id``: the VLAN id) or vxlan (the
        VNI) on ``switch`` (id or name)."""
        body = build(
            PortGroupCreate,
            name=name,
            switch=switch,
            type=type,
            segment_id=segment_id,
            description=description,
        )
        return await self._client.operation("POST", self._path, body=body)

    async def update(
        self, ref: str, *, name: str | None = None, description: str | None = None
    ) -> AsyncOperation:
        """Rename or describe a port group (its segment never changes)."""
        body = build(PortGroupUpdate, name=name, description=description)
        return await self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class AsyncSubnets(AsyncCollection[Subnet]):
    """``client.subnets``: IP pools of port groups, and the addresses held on them."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/subnets", Subnet)

    async def create(
        self,
        name: str,
        *,
        port_group: str,
        cidr: str,
        gateway: str | None = None,
        no_gateway: bool = False,
        dns_servers: Sequence[str] = (),
        ranges: Ranges = (),
        reserved: Sequence[str] = (),
        dhcp: bool = True,
        description: str = "",
    ) -> AsyncOperation:
        """A subnet of ``port_group``. ``gateway`` defaults to the first host address
        (``no_gateway``: none); ``ranges`` to every host address but the gateway."""
        body = build(
            SubnetCreate,
            name=name,
            port_group=port_group,
            cidr=cidr,
            gateway=gateway,
            no_gateway=no_gateway,
            dns_servers=list(dns_servers),
            ranges=_ranges(ranges),
            reserved=list(reserved),
            dhcp=dhcp,
            description=description,
        )
        return await self._client.operation("POST", self._path, body=body)

    async def update(
        self,
        ref: str,
        *,
        name: str | None = None,
        description: str | None = None,
        dns_servers: Sequence[str] | None = None,
        ranges: Ranges | None = None,
        reserved: Sequence[str] | None = None,
        dhcp: bool | None = None,
    ) -> AsyncOperation:
        """Change the given fields (``None``: unchanged; ``ranges=[]``: the default ranges)."""
        body = build(
            SubnetUpdate,
            name=name,
            description=description,
            dns_servers=None if dns_servers is None else list(dns_servers),
            ranges=_ranges(ranges),
            reserved=None if reserved is None else list(reserved),
            dhcp=dhcp,
        )
        return await self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)

    async def allocations_page(
        self, subnet: str, *, limit: int = MAX_PAGE, offset: int = 0
    ) -> Page[IpAllocation]:
        """One page of the subnet's allocations, in address order."""
        response = await self._client.request(
            "GET",
            f"{self._path}/{quote_ref(subnet)}/allocations",
            params={"limit": str(limit), "offset": str(offset)},
        )
        return parse_page(IpAllocation, response.content)

    async def allocations(self, subnet: str) -> list[IpAllocation]:
        """Every allocated address of the subnet, in address order (the NIC and VM of each
        only for platform admins)."""
        out: list[IpAllocation] = []
        while True:
            page = await self.allocations_page(subnet, offset=len(out))
            out += page.items
            if not page.items or len(out) >= page.total:
                return out

    async def hold(self, subnet: str, address: str | None = None) -> IpAllocation:
        """Hold ``address`` (or the lowest free one) for later use: the allocation made.
        ``InUse`` if taken, ``Conflict`` (``reason="subnet_full"``) if none is free."""
        body = build(IpAllocationRequest, address=address)
        path = f"{self._path}/{quote_ref(subnet)}/allocations"
        response = await self._client.request("POST", path, body=body)
        return parse(IpAllocationHeld, response.content).allocation

    async def release(self, subnet: str, address: str) -> AsyncOperation:
        """Release a held address (``InUse`` if a NIC uses it)."""
        return await self._client.operation(
            "DELETE", f"{self._path}/{quote_ref(subnet)}/allocations/{quote_ref(address)}"
        )
