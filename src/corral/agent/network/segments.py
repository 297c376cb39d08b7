"""A host's L2 segments (flat, VLAN and VXLAN port groups) on its Open vSwitch, applied
idempotently.

The controller (the server) sends each host a ``HostNetwork``: the integration bridge, this
host's VXLAN underlay and its physical uplink, and the segments present on the host, each with
a **host-local VLAN tag** the controller chose. ``SegmentManager.apply`` converges the host's
OVS to it; ``vm_port_tag`` is the tag whoever plugs a VM NIC into the integration bridge puts
on its (access) port.

Layout on a host (every port a segment's traffic enters ``br-int`` through is an access port
tagged with the segment's local tag, so ``br-int`` isolates segments by that tag alone):

- ``br-int`` (netdev, ``fail-mode=secure``; its flows belong to the firewall pipeline, which
  ends in ``NORMAL``): VM ports (access, local tag), VXLAN ports, and one patch port per flat or
  VLAN segment.
- **VXLAN**: one port per (VNI, remote host) on ``br-int``: ``options:key=<VNI>
  options:remote_ip=<remote>``, access-tagged with the segment's local tag, and
  ``protected=true`` (``NORMAL`` never forwards from one protected port to another: split
  horizon, so a full mesh of tunnels cannot loop broadcasts between three or more hosts).
  The userspace datapath's native tunnels need the tunnel IP on an OVS bridge: the underlay
  interface sits on ``br-phy`` and the IP on ``br-phy``'s internal port (with the IP on a plain
  interface OVS fails with "native tunnel routing failed").
- **Flat and VLAN**: the uplink interface is a trunk port on a standalone physical bridge
  (``br-uplink``, or ``br-phy`` when the uplink is the underlay interface). Each segment has a
  patch pair: ``pi-<key>`` on ``br-int`` (access, the local tag) and ``pp-<key>`` on the
  physical bridge (access, the wire VLAN id; tag 0, untagged, for flat). The pair is the VLAN
  translation local tag <-> wire id, without flows, and VXLAN tags can never reach the wire.
- **MTU**: VXLAN adds 50 bytes and OVS drops oversize packets silently. Guests of a VXLAN
  segment use MTU 1450 (the port group's ``mtu`` is the switch's minus 50), or the underlay
  carries the extra bytes: ``Underlay.mtu`` (e.g. 1550) is set as ``mtu_request`` on the
  underlay interface.

- **Flows**: ``apply`` installs none. ``br-int``'s flow table belongs to the NIC firewall
  pipeline (``corral.netflows.firewall``): traffic from tunnel and patch ports enters
  table 0 at low priority and goes to table 3, which ends in ``NORMAL``, so the access tags
  keep segments apart. Caveat (tested, ``xfail``): table 3 delivers IP to a *local* VM by its
  MAC alone (``output:``, not ``NORMAL``), so a frame with another segment's VM MAC crosses
  segments; the pipeline must match the segment too (VM ports: their tag; other ports:
  ``bridge_port_tags``). Without the firewall, one ``priority=0,actions=NORMAL`` flow.

What ``apply`` owns is marked ``external_ids:corral-owner=segments`` on the port: owned ports
that are not wanted any more are removed, wherever they are; other ports (VMs', the operator's)
are never touched. The bridges themselves are never deleted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from corral.agent.network.links import Links
from corral.agent.network.ovs import Ovs
from corral.agent.network.segment_plan import (
    HostState,
    PortSpec,
    desired_ports,
    host_state_from_rows,
    plan_changes,
)
from corral.api.errors import NetworkError
from corral.api.host_network import HostNetwork, Underlay

ROUTE_WAIT_S = 2.0
"""How long ``apply`` waits for OVS to learn the underlay route after adding the address."""


def vm_port_tag(net: HostNetwork, port_group_id: str) -> int:
    """The access tag of a VM port on port group ``port_group_id`` (``NetworkError`` if the
    port group is not on this host)."""
    for s in net.segments:
        if s.port_group_id == port_group_id:
            return s.local_tag
    raise NetworkError(
        f"port group {port_group_id} is not on this host", port_group_id=port_group_id
    )


def bridge_port_tags(net: HostNetwork) -> dict[str, int]:
    """The ports ``apply`` puts on the integration bridge (tunnels, patch ports) and the local
    tag of the segment each one carries: what a flow pipeline needs to know which segment a
    packet from a non-VM port belongs to."""
    return {
        p.name: p.tag for p in desired_ports(net) if p.bridge == net.bridge and p.tag is not None
    }


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` changed and what it noticed without failing: bridges made or repaired,
    ports (names, in (bridge, name) order; a port moved to another bridge counts as added),
    ``links``: kernel-side changes ("10.0.0.1/24 on br-phy", "br-phy up")."""

    bridges: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.bridges or self.added or self.updated or self.removed or self.links)


PORT_COLUMNS = ("_uuid", "name", "tag", "protected", "external_ids", "interfaces")
IFACE_COLUMNS = ("_uuid", "name", "type", "options", "mtu_request", "ofport", "error")
BRIDGE_COLUMNS = ("name", "datapath_type", "fail_mode", "ports")


@dataclass
class SegmentManager:
    """Applies ``HostNetwork``s to one host's OVS, one at a time. ``links``: where the
    underlay bridge's internal port lives (the namespace ``ovs-vswitchd`` runs in)."""

    ovs: Ovs
    links: Links = field(default_factory=Links)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def state(self) -> HostState:
        """The bridges and ports of this OVS instance, as the planner sees them."""
        bridges = await self.ovs.list_rows("Bridge", BRIDGE_COLUMNS)
        ports = await self.ovs.list_rows("Port", PORT_COLUMNS)
        ifaces = await self.ovs.list_rows("Interface", IFACE_COLUMNS)
        return host_state_from_rows(bridges, ports, ifaces)

    async def apply(self, net: HostNetwork) -> ApplyResult:
        """Converge this host to ``net`` and return what changed (nothing, the second time).

        In order: the underlay interface must not hold the tunnel IP (else ``NetworkError``,
        nothing changed); missing or misconfigured bridges are (re)made; every port change
        (add, update, remove) is one OVSDB transaction; the tunnel IP is added to the underlay
        bridge's port, which is brought up. Then every wanted port must have opened: a port
        OVS could not open (a missing uplink NIC) raises ``NetworkError`` (``context.ports``:
        name -> OVS error) — everything else stays applied and the next ``apply`` retries.
        A remote the underlay bridge has no route to is a warning (its traffic cannot flow).
        Concurrent calls are serialized.
        """
        async with self._lock:
            return await self._apply(net)

    async def _apply(self, net: HostNetwork) -> ApplyResult:
        if net.underlay is not None:
            await self._check_underlay_interface(net.underlay)
        before = await self.state()
        plan = plan_changes(net, before)
        for bridge in plan.bridges:
            if bridge == net.bridge:
                await self.ovs.ensure_bridge(bridge)
            else:
                await self.ovs.ensure_standalone_bridge(bridge)
        commands = plan.vsctl_args()
        if commands:
            await self.ovs.vsctl(*commands)
        links: list[str] = []
        if net.underlay is not None:
            ul = net.underlay
            if await self.links.ensure_address(ul.bridge, ul.address):
                links.append(f"{ul.address} on {ul.bridge}")
            if await self.links.ensure_up(ul.bridge):
                links.append(f"{ul.bridge} up")
        after = await self.state() if plan.bridges or commands else before
        self._check_opened(desired_ports(net), after)
        warnings = await self._check_routes(net, wait=bool(links or plan.bridges))
        return ApplyResult(
            bridges=tuple(plan.bridges),
            added=tuple(p.name for p in plan.add),
            updated=tuple(p.name for p in plan.update),
            removed=tuple(p.name for p in plan.remove),
            links=tuple(links),
            warnings=tuple(warnings),
        )

    async def _check_underlay_interface(self, ul: Underlay) -> None:
        try:
            held = await self.links.addresses(ul.interface)
        except NetworkError:
            return  # a missing NIC is reported when OVS cannot open it
        if any(a.ip == ul.address.ip for a in held):
            raise NetworkError(
                f"the tunnel IP {ul.ip} is on {ul.interface}: it must be on {ul.bridge} "
                "(move it in the host's network configuration)",
                interface=ul.interface,
                bridge=ul.bridge,
                address=ul.ip,
            )

    @staticmethod
    def _check_opened(wanted: list[PortSpec], state: HostState) -> None:
        failed = {}
        for spec in wanted:
            port = state.ports.get(spec.name)
            if port is not None and (port.error or port.ofport == -1):
                failed[spec.name] = port.error or "no OpenFlow port"
        if failed:
            names = ", ".join(sorted(failed))
            raise NetworkError(f"Open vSwitch could not open {names}", ports=failed)

    async def _check_routes(self, net: HostNetwork, *, wait: bool) -> list[str]:
        """Remotes whose route (in OVS's own routing table, learnt from the kernel) does not
        leave through the underlay bridge with the tunnel IP as source."""
        ul = net.underlay
        remotes = sorted({r for s in net.segments for r in s.remotes})
        if ul is None or not remotes:
            return []
        deadline = time.monotonic() + (ROUTE_WAIT_S if wait else 0.0)
        while True:
            problems = [p for r in remotes if (p := await self._route_problem(ul, r))]
            if not problems or time.monotonic() >= deadline:
                return problems
            await asyncio.sleep(0.05)

    async def _route_problem(self, ul: Underlay, remote: str) -> str | None:
        try:
            out = await self.ovs.appctl("ovs/route/lookup", remote)
        except NetworkError:
            return f"no route to remote {remote}"
        fields = {k: v for k, _, v in (line.partition(" ") for line in out.splitlines())}
        if fields.get("dev") != ul.bridge:
            return f"remote {remote} is routed through {fields.get('dev')}, not {ul.bridge}"
        if fields.get("src") != ul.ip:
            return f"remote {remote} is reached from {fields.get('src')}, not {ul.ip}"
        return None
