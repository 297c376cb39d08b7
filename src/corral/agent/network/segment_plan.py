"""Planning a host's segment ports (pure: no I/O): the ports a ``HostNetwork`` needs, what
differs from the bridges' current ports, and the one ``ovs-vsctl`` transaction that closes the
difference. The layout it plans is described in ``corral.agent.network.segments``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from corral.api.networks import SegmentType

if TYPE_CHECKING:
    from corral.api.host_network import HostNetwork

OWNER_KEY = "corral-owner"
OWNER = "segments"
PG_KEY = "corral-port-group"

Pairs = tuple[tuple[str, str], ...]


def tunnel_port_name(vni: int, remote: str) -> str:
    """The VXLAN port of (VNI, remote): ``vx`` + 12 hex digits (Linux's 15-character limit
    leaves no room for both in clear; ``options`` and ``external_ids`` carry them)."""
    return "vx" + hashlib.sha256(f"{vni}|{remote}".encode()).hexdigest()[:12]


def patch_port_names(type: SegmentType, segment_id: int | None) -> tuple[str, str]:
    """The patch pair of a flat/VLAN segment: (``br-int`` side, physical bridge side)."""
    key = "flat" if type == SegmentType.flat else f"v{segment_id}"
    return f"pi-{key}", f"pp-{key}"


@dataclass(frozen=True)
class PortSpec:
    """A port as wanted. ``type``: "" (a system interface), ``vxlan`` or ``patch``; ``tag``:
    access VLAN (None: a trunk); ``mtu_request`` None: not managed."""

    bridge: str
    name: str
    type: str = ""
    tag: int | None = None
    protected: bool = False
    options: Pairs = ()
    mtu_request: int | None = None
    port_group_id: str | None = None

    @property
    def external_ids(self) -> Pairs:
        pg = ((PG_KEY, self.port_group_id),) if self.port_group_id else ()
        return ((OWNER_KEY, OWNER), *pg)


@dataclass(frozen=True)
class PortState:
    """A port as it is (the columns the planner compares; ``ofport`` -1 / ``error``: OVS could
    not open it)."""

    bridge: str
    name: str
    type: str = ""
    tag: int | None = None
    protected: bool = False
    options: Pairs = ()
    mtu_request: int | None = None
    external_ids: Pairs = ()
    ofport: int | None = None
    error: str | None = None

    @property
    def owned(self) -> bool:
        return (OWNER_KEY, OWNER) in self.external_ids


@dataclass(frozen=True)
class BridgeState:
    name: str
    datapath_type: str = ""
    fail_mode: str = ""


@dataclass(frozen=True)
class HostState:
    """Every bridge and port of one OVS instance (port names are unique in an instance)."""

    bridges: Mapping[str, BridgeState] = field(default_factory=dict)
    ports: Mapping[str, PortState] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Bridges to make or repair, then ports to add, update (same name and bridge, other
    settings: no churn, the OpenFlow port number stays) and remove (owned, not wanted)."""

    bridges: tuple[str, ...] = ()
    add: tuple[PortSpec, ...] = ()
    update: tuple[PortSpec, ...] = ()
    remove: tuple[PortState, ...] = ()
    moved: tuple[PortState, ...] = ()  # wanted on another bridge: removed, then added there

    @property
    def empty(self) -> bool:
        return not (self.bridges or self.add or self.update or self.remove)

    def vsctl_args(self) -> list[str]:
        """The port changes as one ``ovs-vsctl`` transaction (``[]``: nothing to do)."""
        cmds: list[list[str]] = []
        for old in (*self.remove, *self.moved):
            cmds.append(["--if-exists", "del-port", old.bridge, old.name])
        for spec in self.add:
            cmds.append(["add-port", spec.bridge, spec.name, *_port_columns(spec)])
            iface = _iface_columns(spec)
            if iface:
                cmds.append(["set", "interface", spec.name, *iface])
        for spec in self.update:
            cmds.append(["set", "port", spec.name, *_port_columns(spec)])
            if spec.tag is None:
                cmds.append(["clear", "port", spec.name, "tag"])
            cmds.append(["clear", "interface", spec.name, "options"])
            cmds.append(["set", "interface", spec.name, f"type={spec.type or 'system'}",
                         *_iface_columns(spec)])  # fmt: skip
            if not spec.port_group_id:
                cmds.append(["remove", "port", spec.name, "external_ids", PG_KEY])
        return [arg for cmd in cmds for arg in ("--", *cmd)]


def _port_columns(spec: PortSpec) -> list[str]:
    cols = [f"tag={spec.tag}"] if spec.tag is not None else []
    cols.append(f"protected={'true' if spec.protected else 'false'}")
    cols += [f"external_ids:{k}={_quote(v)}" for k, v in spec.external_ids]
    return cols


def _iface_columns(spec: PortSpec) -> list[str]:
    cols = [f"type={spec.type}"] if spec.type else []
    cols += [f"options:{k}={_quote(v)}" for k, v in spec.options]
    if spec.mtu_request is not None:
        cols.append(f"mtu_request={spec.mtu_request}")
    return cols


def _quote(value: str) -> str:
    """An OVSDB string value for ``ovs-vsctl`` (quoted: IPv6 addresses contain colons)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def desired_ports(net: HostNetwork) -> list[PortSpec]:
    """Every port ``net`` needs, sorted by (bridge, name)."""
    specs: list[PortSpec] = []
    ul, up, upb = net.underlay, net.uplink, net.uplink_bridge
    if ul is not None:
        specs.append(PortSpec(ul.bridge, ul.interface, mtu_request=ul.mtu))
    if up is not None and upb is not None and (ul is None or ul.interface != up.interface):
        specs.append(PortSpec(upb, up.interface))
    for s in net.segments:
        pg = s.port_group_id
        if s.type == SegmentType.vxlan:
            for remote in s.remotes:
                opts = (("key", str(s.segment_id)), ("remote_ip", remote))
                name = tunnel_port_name(s.segment_id or 0, remote)
                specs.append(PortSpec(net.bridge, name, "vxlan", s.local_tag, True, opts, None, pg))
        elif upb is not None:
            inner, outer = patch_port_names(s.type, s.segment_id)
            wire = 0 if s.type == SegmentType.flat else s.segment_id
            specs.append(PortSpec(net.bridge, inner, "patch", s.local_tag, False,
                                  (("peer", outer),), None, pg))  # fmt: skip
            specs.append(PortSpec(upb, outer, "patch", wire, False, (("peer", inner),), None, pg))
    return sorted(specs, key=lambda p: (p.bridge, p.name))


def _differs(spec: PortSpec, port: PortState) -> bool:
    mtu_differs = spec.mtu_request is not None and spec.mtu_request != port.mtu_request
    return (
        spec.type != port.type
        or spec.tag != port.tag
        or spec.protected != port.protected
        or dict(spec.options) != dict(port.options)
        or mtu_differs
        or any(dict(port.external_ids).get(k) != v for k, v in spec.external_ids)
        or (spec.port_group_id is None and PG_KEY in dict(port.external_ids))
    )


def plan_changes(net: HostNetwork, state: HostState) -> Plan:
    """What to change so that ``state`` becomes what ``net`` needs: bridges missing or not in
    the userspace datapath (``br-int`` also not ``fail-mode=secure``, the physical bridges
    not standalone); wanted ports missing (add), on another bridge (moved: removed and added)
    or with other settings (update); owned ports no longer wanted (remove)."""
    wanted = desired_ports(net)
    bridges = []
    for name in sorted({net.bridge, *(p.bridge for p in wanted)}):
        br = state.bridges.get(name)
        secure = name == net.bridge
        mode_ok = br is not None and (
            br.fail_mode == "secure" if secure else br.fail_mode in ("", "standalone")
        )
        if br is None or br.datapath_type != "netdev" or not mode_ok:
            bridges.append(name)
    add, update, moved = [], [], []
    for spec in wanted:
        port = state.ports.get(spec.name)
        if port is None:
            add.append(spec)
        elif port.bridge != spec.bridge:
            moved.append(port)
            add.append(spec)
        elif _differs(spec, port):
            update.append(spec)
    names = {p.name for p in wanted}
    remove = [p for p in state.ports.values() if p.owned and p.name not in names]
    return Plan(
        bridges=tuple(bridges),
        add=tuple(add),
        update=tuple(update),
        remove=tuple(sorted(remove, key=lambda p: (p.bridge, p.name))),
        moved=tuple(moved),
    )


def host_state_from_rows(
    bridges: Sequence[Mapping[str, Any]],
    ports: Sequence[Mapping[str, Any]],
    ifaces: Sequence[Mapping[str, Any]],
) -> HostState:
    """A ``HostState`` from decoded OVSDB rows (``Ovs.list_rows``) of the Bridge, Port and
    Interface tables. A port's settings are read from its first interface; a port on no
    bridge (being deleted) is skipped."""
    bridge_of: dict[str, str] = {}
    bstates: dict[str, BridgeState] = {}
    for b in bridges:
        bstates[b["name"]] = BridgeState(b["name"], _atom(b["datapath_type"]) or "",
                                         _atom(b["fail_mode"]) or "")  # fmt: skip
        for uuid in _set(b["ports"]):
            bridge_of[uuid] = b["name"]
    iface_by_uuid = {i["_uuid"]: i for i in ifaces}
    pstates: dict[str, PortState] = {}
    for p in ports:
        bridge = bridge_of.get(p["_uuid"])
        members = [iface_by_uuid[u] for u in _set(p["interfaces"]) if u in iface_by_uuid]
        if bridge is None or not members:
            continue
        i = members[0]
        type_ = _atom(i["type"]) or ""
        ofport, error, mtu = _atom(i["ofport"]), _atom(i["error"]), _atom(i["mtu_request"])
        pstates[p["name"]] = PortState(
            bridge=bridge,
            name=p["name"],
            type="" if type_ == "system" else type_,
            tag=_atom(p["tag"]),
            protected=bool(_atom(p["protected"])),
            options=tuple(sorted(_map(i["options"]).items())),
            mtu_request=mtu,
            external_ids=tuple(sorted(_map(p["external_ids"]).items())),
            ofport=ofport,
            error=error,
        )
    return HostState(bridges=bstates, ports=pstates)


def _atom(value: Any) -> Any:
    """An optional OVSDB column: the empty set -> None, a one-element list -> the element."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _set(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}
