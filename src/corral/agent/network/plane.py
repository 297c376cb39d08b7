"""The host's network plane: what ``network.apply`` converges the host to and keeps.

The server (the network's controller) sends each host its whole network as one
``NetworkApply``; a ``NetworkPlane`` accepts it, stores it and applies it, and applies the stored
state again whenever the host needs it (``refresh``: at agent start, after VM ports appeared or
vanished, periodically). Two implementations: ``OvsNetworkPlane`` (``ovs_plane``: the host's
Open vSwitch, DHCP services and flows) and ``SimulatedNetworkPlane`` (here: validates and
stores, touches nothing; simulated hosts).

Contract shared by both (``NetworkPlane``):

- ``apply(state)``: a ``generation`` lower than the held state's is ignored (answers the held
  digest, changes nothing). Otherwise the state is validated first — it must make a valid
  ``HostNetwork`` with the plane's own ``bridge`` and ``underlay`` (``host_network``) and every
  DHCP service must be on one of its segments (``dhcp_segments``) — else ``NetworkError`` and
  nothing changes; then it is stored (``<data_dir>/network.json``, 0600, atomically: a restarted
  agent applies it again) and held, and only then applied. Returns ``digest``.
- ``digest``: ``network_digest`` of the held state (the accepted one, even while applying it
  failed: the periodic ``refresh`` retries it); ``""`` when the plane holds none (no state
  accepted, or the stored file is unreadable: the server then sends it again).
- ``refresh()``: applies the held state again where the host lost it (no-op without one).
- Every failure is a ``NetworkError``; ``apply`` and ``refresh`` run one at a time (a lock).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from corral.agent.files import write_private
from corral.api.agent import NetworkApply, PortFlows, network_digest
from corral.api.errors import NetworkError, StorageError
from corral.api.host_network import DhcpSegment, HostNetwork, Underlay
from corral.netflows.firewall import bridge_base

log = logging.getLogger(__name__)

STATE_FILE = "network.json"
BASE_COOKIE = 0x636F7272616C0000
"""The cookie of the bridge's base flows (``bridge_base``): finding none of them on the bridge
means Open vSwitch lost its flows (``ovs-vswitchd`` restarted)."""


# --------------------------------------------------------------------------------------------
# Pure: what a state means on this host


def host_network(state: NetworkApply, *, bridge: str, underlay: Underlay | None) -> HostNetwork:
    """The ``HostNetwork`` of ``state`` with this host's integration ``bridge`` and VXLAN
    ``underlay`` (its configuration, not the server's); ``NetworkError`` if it is not valid
    (e.g. a vxlan segment without an underlay, a flat one without an uplink)."""
    try:
        return HostNetwork(
            bridge=bridge, underlay=underlay, uplink=state.uplink, segments=state.segments
        )
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise NetworkError(f"the host network is not valid here: {problems}") from exc


def dhcp_segments(state: NetworkApply, net: HostNetwork) -> list[DhcpSegment]:
    """``state.dhcp`` as this host runs it: each service on ``net.bridge`` with the local tag
    of its port group's segment (whatever the server put there); ``NetworkError`` for a service
    whose port group has no segment on this host, or a port group listed twice."""
    tags = {s.port_group_id: s.local_tag for s in net.segments}
    ids = [d.port_group_id for d in state.dhcp]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise NetworkError("DHCP for a port group is listed twice", port_groups=dupes)
    missing = sorted(i for i in ids if i not in tags)
    if missing:
        raise NetworkError(
            "DHCP for port groups without a segment on this host", port_groups=missing
        )
    return [
        d.model_copy(update={"bridge": net.bridge, "tag": tags[d.port_group_id]})
        for d in state.dhcp
    ]


def flow_table(
    trunks: Mapping[str, int], ports: Sequence[PortFlows], present: Collection[str]
) -> list[str]:
    """The integration bridge's whole flow table: the base flows (``bridge_base`` with the
    ``trunks``, non-VM port name -> local tag of its segment; cookie ``BASE_COOKIE``) and every
    port's flows, each only for ports ``present`` on the bridge (flows name their ports, and
    ``ovs-ofctl`` refuses names of absent ones, e.g. a stopped VM's NIC)."""
    here = set(present)
    live: dict[int | str, int] = {p: tag for p, tag in trunks.items() if p in here}
    flows = bridge_base(live, cookie=BASE_COOKIE)
    for port in ports:
        if port.port in here:
            flows.extend(port.flows)
    return flows


# --------------------------------------------------------------------------------------------
# The plane


class NetworkPlane(ABC):
    """See the module docstring. ``data_dir``: where ``network.json`` is kept (None: in memory
    only). ``load`` reads it (the runtime calls it at start; ``apply`` and ``refresh`` do when
    nobody did)."""

    def __init__(
        self, *, bridge: str = "br-int", underlay: Underlay | None = None,
        data_dir: Path | None = None,
    ) -> None:  # fmt: skip
        self.bridge = bridge
        self.underlay = underlay
        self.path = data_dir / STATE_FILE if data_dir is not None else None
        self._state: NetworkApply | None = None
        self._digest = ""
        self._loaded = False
        self._lock = asyncio.Lock()

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def state(self) -> NetworkApply | None:
        """The held state (None: none)."""
        return self._state

    @property
    def tunnel_ip(self) -> str | None:
        """This host's VXLAN tunnel endpoint (``HostFacts.tunnel_ip``; None without underlay)."""
        return self.underlay.ip if self.underlay is not None else None

    def load(self) -> None:
        """Hold the stored state (absent or unreadable: none, with a warning if unreadable)."""
        self._loaded = True
        if self.path is None:
            return
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read %s (%s): no network state held", self.path, exc.strerror)
            return
        try:
            state = NetworkApply.model_validate_json(data)
        except ValidationError:
            log.warning("%s is not a network state: none held", self.path)
            return
        self._hold(state)

    async def apply(self, state: NetworkApply) -> str:
        """Accept, store and apply ``state`` (see the module docstring); returns ``digest``."""
        async with self._lock:
            if not self._loaded:
                await asyncio.to_thread(self.load)
            held = self._state
            if held is not None and state.generation < held.generation:
                log.info(
                    "network state of generation %d ignored: holding generation %d",
                    state.generation,
                    held.generation,
                )
                return self._digest
            net = host_network(state, bridge=self.bridge, underlay=self.underlay)
            dhcp = dhcp_segments(state, net)
            await self._store(state)
            await self._converge(state, net, dhcp)
            return self._digest

    async def refresh(self) -> None:
        """Apply the held state again where the host lost it (see the implementations)."""
        async with self._lock:
            if not self._loaded:
                await asyncio.to_thread(self.load)
            if self._state is not None:
                await self._refresh(self._state)

    def _build(self, state: NetworkApply) -> tuple[HostNetwork, list[DhcpSegment]]:
        net = host_network(state, bridge=self.bridge, underlay=self.underlay)
        return net, dhcp_segments(state, net)

    def _hold(self, state: NetworkApply) -> None:
        self._state = state
        self._digest = network_digest(state)

    async def _store(self, state: NetworkApply) -> None:
        path = self.path
        if path is not None:
            data = state.model_dump_json(indent=1).encode()
            try:
                await asyncio.to_thread(write_private, path, data)
            except StorageError as exc:
                raise NetworkError(
                    f"cannot store the network state: {exc.message}", **exc.context
                ) from exc
        self._hold(state)

    @abstractmethod
    async def _converge(
        self, state: NetworkApply, net: HostNetwork, dhcp: list[DhcpSegment]
    ) -> None:
        """Make the host match ``state`` (already validated into ``net`` and ``dhcp``)."""

    @abstractmethod
    async def _refresh(self, state: NetworkApply) -> None:
        """Apply the held ``state`` again where needed."""


class SimulatedNetworkPlane(NetworkPlane):
    """A simulated host's plane: validates like the real one (a bad state fails the same way),
    stores and holds; no Open vSwitch, no processes. ``applied`` counts accepted states."""

    def __init__(
        self, *, bridge: str = "br-int", underlay: Underlay | None = None,
        data_dir: Path | None = None,
    ) -> None:  # fmt: skip
        super().__init__(bridge=bridge, underlay=underlay, data_dir=data_dir)
        self.applied = 0

    async def _converge(
        self, state: NetworkApply, net: HostNetwork, dhcp: list[DhcpSegment]
    ) -> None:
        self.applied += 1

    async def _refresh(self, state: NetworkApply) -> None:
        return None
