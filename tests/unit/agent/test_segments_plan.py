"""Planning a host's segment ports (pure): the ports a HostNetwork needs, the difference with
the current ports (add, update without churn, remove only what segments own) and the
``ovs-vsctl`` transaction; the model's validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.agent.network.segment_plan import (
    OWNER,
    OWNER_KEY,
    PG_KEY,
    BridgeState,
    HostState,
    PortSpec,
    PortState,
    desired_ports,
    host_state_from_rows,
    plan_changes,
    tunnel_port_name,
)
from corral.agent.network.segments import ApplyResult, bridge_port_tags, vm_port_tag
from corral.api.errors import NetworkError
from corral.api.host_network import HostNetwork, Segment

UNDERLAY = {"interface": "eth1", "address": "10.0.0.1/24"}


def net(*segments: dict[str, Any], **kw: Any) -> HostNetwork:
    base: dict[str, Any] = {"underlay": UNDERLAY, "uplink": {"interface": "eth2"}}
    return HostNetwork.model_validate({**base, **kw, "segments": list(segments)})


VX = {"port_group_id": "pg-vx", "type": "vxlan", "segment_id": 5000, "local_tag": 1,
      "remotes": ["10.0.0.2", "10.0.0.3"]}  # fmt: skip
VLAN = {"port_group_id": "pg-vlan", "type": "vlan", "segment_id": 100, "local_tag": 2}
FLAT = {"port_group_id": "pg-flat", "type": "flat", "local_tag": 3}
OK_BRIDGES = {
    "br-int": BridgeState("br-int", "netdev", "secure"),
    "br-phy": BridgeState("br-phy", "netdev", ""),
    "br-uplink": BridgeState("br-uplink", "netdev", "standalone"),
}


def as_state(spec: PortSpec, **change: Any) -> PortState:
    """The port as OVS would report it once ``spec`` is applied (then ``change``d)."""
    fields: dict[str, Any] = {
        "bridge": spec.bridge, "name": spec.name, "type": spec.type, "tag": spec.tag,
        "protected": spec.protected, "options": spec.options, "mtu_request": spec.mtu_request,
        "external_ids": spec.external_ids, "ofport": 7,
    }  # fmt: skip
    return PortState(**{**fields, **change})


def converged(n: HostNetwork, *extra: PortState) -> HostState:
    ports = {p.name: as_state(p) for p in desired_ports(n)}
    ports.update({p.name: p for p in extra})
    return HostState(bridges=OK_BRIDGES, ports=ports)


def test_desired_ports_layout() -> None:
    ports = {p.name: p for p in desired_ports(net(VX, VLAN, FLAT))}
    vx2, vx3 = tunnel_port_name(5000, "10.0.0.2"), tunnel_port_name(5000, "10.0.0.3")
    assert set(ports) == {"eth1", "eth2", vx2, vx3, "pi-v100", "pp-v100", "pi-flat", "pp-flat"}
    assert ports["eth1"] == PortSpec("br-phy", "eth1")
    assert ports["eth2"] == PortSpec("br-uplink", "eth2")
    assert ports[vx2] == PortSpec("br-int", vx2, "vxlan", 1, True,
                                  (("key", "5000"), ("remote_ip", "10.0.0.2")), None, "pg-vx")  # fmt: skip
    # the patch pair: local tag on br-int, wire id (0: untagged) on the physical bridge
    assert (ports["pi-v100"].bridge, ports["pi-v100"].tag) == ("br-int", 2)
    assert (ports["pp-v100"].bridge, ports["pp-v100"].tag) == ("br-uplink", 100)
    assert ports["pi-v100"].options == (("peer", "pp-v100"),)
    assert ports["pp-v100"].options == (("peer", "pi-v100"),)
    assert (ports["pi-flat"].tag, ports["pp-flat"].tag) == (3, 0)
    assert all(len(name) <= 15 for name in ports)
    assert not ports["pi-flat"].protected and ports[vx3].protected


def test_everything_is_added_to_an_empty_host() -> None:
    n = net(VX, VLAN)
    plan = plan_changes(n, HostState())
    assert plan.bridges == ("br-int", "br-phy", "br-uplink")
    assert [p.name for p in plan.add] == [p.name for p in desired_ports(n)]
    assert not plan.update and not plan.remove
    args = plan.vsctl_args()
    vx = tunnel_port_name(5000, "10.0.0.2")
    i = args.index(vx)
    assert args[i - 2 : i + 5] == ["add-port", "br-int", vx, "tag=1", "protected=true",
                                   f'external_ids:{OWNER_KEY}="{OWNER}"',
                                   f'external_ids:{PG_KEY}="pg-vx"']  # fmt: skip
    assert ["set", "interface", vx, "type=vxlan", 'options:key="5000"',
            'options:remote_ip="10.0.0.2"'] == args[i + 6 : i + 12]  # fmt: skip


def test_a_converged_host_needs_nothing() -> None:
    n = net(VX, VLAN, FLAT)
    vm_port = PortState("br-int", "tap-vm1", tag=1, ofport=20)  # not ours: never touched
    plan = plan_changes(n, converged(n, vm_port))
    assert plan.empty and plan.vsctl_args() == []


def test_gone_segments_and_remotes_are_removed_and_nothing_else() -> None:
    before = net(VX, VLAN, FLAT)
    vm_port = PortState("br-int", "tap-vm1", tag=2, ofport=20)
    operator = PortState("br-uplink", "mirror0", ofport=21)
    after = net({**VX, "remotes": ["10.0.0.3"]}, FLAT)
    plan = plan_changes(after, converged(before, vm_port, operator))
    vx = tunnel_port_name(5000, "10.0.0.2")
    assert [p.name for p in plan.remove] == ["pi-v100", vx, "pp-v100"]  # by bridge, name
    assert not plan.add and not plan.update
    assert plan.vsctl_args() == [
        "--", "--if-exists", "del-port", "br-int", "pi-v100",
        "--", "--if-exists", "del-port", "br-int", vx,
        "--", "--if-exists", "del-port", "br-uplink", "pp-v100",
    ]  # fmt: skip


def test_a_changed_tag_is_an_update_in_place() -> None:
    before = net(VX)
    after = net({**VX, "local_tag": 9})
    plan = plan_changes(after, converged(before))
    assert not plan.add and not plan.remove
    assert sorted(p.name for p in plan.update) == sorted(
        tunnel_port_name(5000, r) for r in ("10.0.0.2", "10.0.0.3")
    )
    args = plan.vsctl_args()
    assert "tag=9" in args and "del-port" not in args and "add-port" not in args


def test_settings_changed_by_hand_are_repaired() -> None:
    n = net(VX, VLAN)
    vx = tunnel_port_name(5000, "10.0.0.2")
    drift = [
        as_state(next(p for p in desired_ports(n) if p.name == vx), protected=False),
        as_state(next(p for p in desired_ports(n) if p.name == "pp-v100"), tag=None),
        as_state(
            next(p for p in desired_ports(n) if p.name == "pi-v100"),
            options=(("peer", "elsewhere"),),
        ),
    ]
    plan = plan_changes(n, converged(n, *drift))
    assert sorted(p.name for p in plan.update) == sorted(["pi-v100", "pp-v100", vx])


def test_an_existing_interface_is_adopted_and_a_misplaced_one_moved() -> None:
    n = net(VLAN)
    unowned = PortState("br-phy", "eth1", ofport=1)  # put there by the installer
    misplaced = PortState("br-other", "eth2", ofport=2)
    plan = plan_changes(n, converged(n, unowned, misplaced))
    assert [p.name for p in plan.update] == ["eth1"]  # external_ids added, stays put
    assert [p.name for p in plan.moved] == ["eth2"] and [p.name for p in plan.add] == ["eth2"]
    args = plan.vsctl_args()
    assert args[:5] == ["--", "--if-exists", "del-port", "br-other", "eth2"]


def test_bridges_in_the_wrong_mode_are_repaired() -> None:
    n = net(VLAN)
    bridges = {**OK_BRIDGES, "br-int": BridgeState("br-int", "netdev", "standalone"),
               "br-uplink": BridgeState("br-uplink", "system", "")}  # fmt: skip
    state = converged(n)
    plan = plan_changes(n, HostState(bridges=bridges, ports=state.ports))
    assert plan.bridges == ("br-int", "br-uplink")


def test_shared_uplink_and_underlay_interface() -> None:
    n = net(VLAN, VX, uplink={"interface": "eth1"})
    ports = {p.name: p for p in desired_ports(n)}
    assert n.uplink_bridge == "br-phy"
    assert ports["eth1"].bridge == "br-phy" and "eth2" not in ports
    assert ports["pp-v100"].bridge == "br-phy"


def test_underlay_mtu_is_requested() -> None:
    n = net(VX, underlay={**UNDERLAY, "mtu": 1550})
    eth1 = next(p for p in desired_ports(n) if p.name == "eth1")
    assert eth1.mtu_request == 1550
    stale = as_state(eth1, mtu_request=None)
    plan = plan_changes(n, converged(n, stale))
    assert [p.name for p in plan.update] == ["eth1"]
    assert "mtu_request=1550" in plan.vsctl_args()


def test_ipv6_remotes_are_quoted() -> None:
    n = net({**VX, "remotes": ["fd00::2"]}, underlay={"interface": "eth1", "address": "fd00::1/64"})
    args = plan_changes(n, HostState()).vsctl_args()
    assert 'options:remote_ip="fd00::2"' in args


@pytest.mark.parametrize(
    ("segments", "extra", "error"),
    [
        ([VX, {**VLAN, "local_tag": 1}], {}, "local tag used twice: 1"),
        ([VLAN, {**VLAN, "port_group_id": "x", "local_tag": 5}], {}, "segment used twice"),
        ([VX, {**VX, "local_tag": 5}], {}, "port group used twice"),
        ([VX], {"underlay": None}, "vxlan segments need an underlay"),
        ([FLAT], {"uplink": None}, "flat and vlan segments need an uplink"),
        ([{**VX, "remotes": ["10.0.0.1"]}], {}, "own tunnel IP"),
        ([{**VX, "remotes": ["fd00::2"]}], {}, "IP version"),
        ([{**VX, "remotes": ["10.0.0.2", "10.0.0.2"]}], {}, "listed twice"),
        ([{**VLAN, "remotes": ["10.0.0.2"]}], {}, "only vxlan"),
        ([{**VLAN, "segment_id": 5000}], {}, "1-4094"),
        ([{**FLAT, "segment_id": 1}], {}, "no segment_id"),
        ([{**VX, "local_tag": 4095}], {}, "less than or equal to 4094"),
        ([], {"uplink": {"interface": "eth1", "bridge": "br-x"}}, "one bridge holds both"),
        ([], {"uplink": {"interface": "eth2", "bridge": "br-phy"}}, "bridges must differ"),
        ([], {"bridge": "br-phy"}, "bridges must differ"),
    ],
)
def test_invalid_networks_are_refused(
    segments: list[dict[str, Any]], extra: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        net(*segments, **extra)


def test_vm_port_tag_and_bridge_port_tags() -> None:
    n = net(VX, VLAN)
    assert vm_port_tag(n, "pg-vlan") == 2
    with pytest.raises(NetworkError) as err:
        vm_port_tag(n, "pg-nope")
    assert err.value.context == {"port_group_id": "pg-nope"}
    assert bridge_port_tags(n) == {
        tunnel_port_name(5000, "10.0.0.2"): 1, tunnel_port_name(5000, "10.0.0.3"): 1,
        "pi-v100": 2,
    }  # fmt: skip
    assert isinstance(n.segments[0], Segment)


def test_apply_result_changed() -> None:
    assert not ApplyResult(warnings=("no route to remote 10.0.0.2",)).changed
    assert ApplyResult(removed=("vx1",)).changed


def test_host_state_from_ovsdb_rows() -> None:
    """Rows as ``Ovs.list_rows`` decodes them (from a real ``ovs-vsctl --format=json``)."""
    bridges = [{"name": "br-int", "datapath_type": "netdev", "fail_mode": "secure",
                "ports": ["p1", "p2", "p3"]}]  # fmt: skip
    ports = [
        {"_uuid": "p1", "name": "vx1", "tag": 5, "protected": True,
         "external_ids": {OWNER_KEY: OWNER, PG_KEY: "pg"}, "interfaces": "i1"},
        {"_uuid": "p2", "name": "eth9", "tag": [], "protected": False, "external_ids": {},
         "interfaces": "i2"},
        {"_uuid": "p3", "name": "br-int", "tag": [], "protected": False, "external_ids": {},
         "interfaces": "i3"},
        {"_uuid": "p4", "name": "orphan", "tag": [], "protected": False, "external_ids": {},
         "interfaces": "i4"},
    ]  # fmt: skip
    ifaces = [
        {"_uuid": "i1", "name": "vx1", "type": "vxlan", "options": {"key": "7",
         "remote_ip": "fd00::2"}, "mtu_request": [], "ofport": 1, "error": []},
        {"_uuid": "i2", "name": "eth9", "type": "system", "options": {}, "mtu_request": 1550,
         "ofport": -1, "error": "could not open network device eth9 (No such device)"},
        {"_uuid": "i3", "name": "br-int", "type": "internal", "options": {}, "mtu_request": [],
         "ofport": 65534, "error": []},
    ]  # fmt: skip
    state = host_state_from_rows(bridges, ports, ifaces)
    assert state.bridges["br-int"] == BridgeState("br-int", "netdev", "secure")
    assert set(state.ports) == {"vx1", "eth9", "br-int"}  # the orphan is on no bridge
    vx1 = state.ports["vx1"]
    assert vx1 == PortState("br-int", "vx1", "vxlan", 5, True,
                            (("key", "7"), ("remote_ip", "fd00::2")), None,
                            ((OWNER_KEY, OWNER), (PG_KEY, "pg")), 1, None)  # fmt: skip
    assert vx1.owned and not state.ports["eth9"].owned
    eth9 = state.ports["eth9"]
    assert (eth9.type, eth9.tag, eth9.mtu_request, eth9.ofport) == ("", None, 1550, -1)
    assert eth9.error is not None and "No such device" in eth9.error
