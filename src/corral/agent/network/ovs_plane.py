"""The network plane of a real host: its Open vSwitch, DHCP services and flows (see ``plane``).

Applying a state, in order (each step converges as far as it can; ``NetworkError`` at the end
names every step that failed, ``context.failed``: step -> message):

1. ``SegmentManager.apply`` of the ``HostNetwork`` (integration bridge, underlay, uplink,
   tunnel and patch ports);
2. ``DhcpManager.apply`` of the DHCP services (``<dhcp_dir>``, default ``<data_dir>/dhcp``;
   skipped while there are none and the manager never ran here, so that a host without DHCP
   needs no directory ``nobody`` can search);
3. the meters of the ports' bandwidth limits made or changed, then the integration bridge's
   flow table replaced in one bundle by ``flow_table``: the base flows with the trunks
   (``bridge_port_tags`` and each DHCP port -> its segment's local tag) and the flows of every
   ``PortFlows`` whose port is on the bridge now; then the meters no port wants deleted.

``refresh`` (cheap when nothing changed: ``ovs-ofctl show`` and one cookie-filtered
``dump-flows``): the whole state again when it was never applied by this process or the last
apply failed, the bridge is gone or unreadable (Open vSwitch restarted with a fresh database),
or its base flows are gone (``ovs-vswitchd`` restarted); only the flows again when the bridge's
ports (name -> OpenFlow number) differ from those the flows were loaded for (a VM started or
stopped, a NIC plugged).
"""

from __future__ import annotations

import re
from pathlib import Path

from corral.agent.network.dhcp import DhcpManager
from corral.agent.network.links import Links
from corral.agent.network.ovs import Ovs
from corral.agent.network.plane import BASE_COOKIE, NetworkPlane, flow_table
from corral.agent.network.segments import SegmentManager, bridge_port_tags
from corral.api.agent import NetworkApply
from corral.api.errors import NetworkError
from corral.api.host_network import DhcpSegment, HostNetwork, Underlay

_PORT_LINE = re.compile(r"^\s*(\d+)\(([^)]+)\):", re.MULTILINE)


class OvsNetworkPlane(NetworkPlane):
    """See the module docstring. ``netns``: the network namespace Open vSwitch and its system
    ports live in (None: the agent's own; tests run a private OVS in a namespace)."""

    def __init__(
        self,
        *,
        data_dir: Path,
        ovs: Ovs,
        bridge: str = "br-int",
        underlay: Underlay | None = None,
        netns: str | None = None,
        dhcp_dir: Path | None = None,
    ) -> None:
        super().__init__(bridge=bridge, underlay=underlay, data_dir=data_dir)
        self.ovs = ovs
        self.segments = SegmentManager(ovs, Links(netns))
        self.dhcp = DhcpManager(dhcp_dir or data_dir / "dhcp", ovs, host_netns=netns)
        self._applied = False
        self._seen: dict[str, int] | None = None
        """The bridge's ports (name -> OpenFlow number) when the flows were last loaded."""

    async def bridge_ports(self) -> dict[str, int]:
        """The bridge's ports as ``ovs-vswitchd`` numbers them (``NetworkError`` if the bridge
        does not exist)."""
        out = await self.ovs.ofctl("show", self.bridge)
        return {name: int(number) for number, name in _PORT_LINE.findall(out)}

    async def _converge(
        self, state: NetworkApply, net: HostNetwork, dhcp: list[DhcpSegment]
    ) -> None:
        self._applied = False
        failed: dict[str, str] = {}
        try:
            await self._check_uplink(net)
            await self.segments.apply(net)
        except NetworkError as exc:
            failed["segments"] = exc.message
        if dhcp or self.dhcp.run_dir.exists():
            try:
                await self.dhcp.apply(dhcp)
            except NetworkError as exc:
                failed["dhcp"] = exc.message
        try:
            await self._load_flows(state, net, dhcp)
        except NetworkError as exc:
            failed["flows"] = exc.message
        if failed:
            steps = "; ".join(f"{step}: {message}" for step, message in failed.items())
            raise NetworkError(f"the network state was applied only in part ({steps})",
                               failed=failed)  # fmt: skip
        self._applied = True

    async def _check_uplink(self, net: HostNetwork) -> None:
        """``NetworkError`` if the uplink interface holds addresses of the host (other than
        link-local ones): putting it on a bridge would cut the host's own networking (a switch
        given the management interface as uplink)."""
        up = net.uplink
        if up is None or (net.underlay is not None and net.underlay.interface == up.interface):
            return
        try:
            held = await self.segments.links.addresses(up.interface)
        except NetworkError:
            return  # absent: the segment manager says so
        used = [str(a) for a in held if not a.ip.is_link_local]
        if used:
            raise NetworkError(
                f"uplink {up.interface} holds the host's addresses ({', '.join(used)}): it is not"
                " taken over (give the switch an interface dedicated to VM traffic)",
                interface=up.interface,
                addresses=used,
            )

    async def _load_flows(
        self, state: NetworkApply, net: HostNetwork, dhcp: list[DhcpSegment]
    ) -> None:
        ports = await self.bridge_ports()
        trunks = bridge_port_tags(net)
        for d in dhcp:
            if d.tag is not None:
                trunks[self.dhcp.names(d.port_group_id).host_port] = d.tag
        await self._sync_meters(state)
        await self.ovs.replace_flows(self.bridge, flow_table(trunks, state.ports, ports))
        await self._drop_meters(state)
        self._seen = ports

    def _wanted_meters(self, state: NetworkApply) -> dict[int, tuple[int, int]]:
        return {m.id: (m.kbps, m.burst_kbits) for p in state.ports for m in p.meters}

    async def _sync_meters(self, state: NetworkApply) -> None:
        """Make or change the meters the flows use (before the flows: a flow naming a missing
        meter is refused)."""
        have = await self.ovs.meters(self.bridge)
        for meter_id, (kbps, burst) in sorted(self._wanted_meters(state).items()):
            if have.get(meter_id) != (kbps, burst):
                await self.ovs.set_meter(
                    self.bridge, meter_id, kbps, burst, exists=meter_id in have
                )

    async def _drop_meters(self, state: NetworkApply) -> None:
        """Delete the meters no flow uses any more (after the flows were replaced)."""
        wanted = self._wanted_meters(state)
        for meter_id in sorted(set(await self.ovs.meters(self.bridge)) - set(wanted)):
            await self.ovs.delete_meter(self.bridge, meter_id)

    async def _base_flows_present(self) -> bool:
        out = await self.ovs.ofctl(
            "--no-stats", "dump-flows", self.bridge, f"cookie={BASE_COOKIE:#x}/-1"
        )
        return "actions=" in out

    async def _refresh(self, state: NetworkApply) -> None:
        whole = not self._applied
        ports: dict[str, int] | None = None
        if not whole:
            try:
                ports = await self.bridge_ports()
                whole = not await self._base_flows_present()
            except NetworkError:
                whole = True
        if whole:
            await self._converge(state, *self._build(state))
        elif ports != self._seen:
            await self._load_flows(state, *self._build(state))
