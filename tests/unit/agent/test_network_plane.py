"""The agent's network plane without Open vSwitch: what a ``NetworkApply`` means on a host
(validation with the agent's bridge and underlay, DHCP services on their segments, the flow
table of the ports present), the simulated plane's generation rule and persistence (0600,
atomic, loaded by a restarted agent), and ``network.apply`` through a runtime: dispatch,
serialization key, the digest in heartbeats, the tunnel IP in the facts, and the refresh after
a VM's ports changed (its failure never fails the VM task)."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corral.agent.executor import payload_key
from corral.agent.heartbeat import Heartbeater
from corral.agent.network.plane import (
    BASE_COOKIE,
    SimulatedNetworkPlane,
    dhcp_segments,
    flow_table,
    host_network,
)
from corral.agent.runtime import HostRuntime
from corral.agent.settings import AgentSettings
from corral.api.agent import (
    AgentTask,
    NetworkApply,
    PortFlows,
    TaskState,
    VmDefine,
    VmPower,
    VmSpec,
    network_digest,
)
from corral.api.errors import NetworkError
from corral.api.host_network import DhcpSegment, Segment, Underlay, Uplink
from corral.api.networks import SegmentType
from tests.unit.agent.fakes import FakeCompute, FakeVolumes

UNDERLAY = Underlay(interface="eth1", address="10.9.0.5/24")


def dhcp(port_group_id: str = "pg-flat", **kw: Any) -> DhcpSegment:
    return DhcpSegment.model_validate(
        {
            "port_group_id": port_group_id,
            "bridge": "br-server",  # the server's idea: the agent puts its own bridge
            "subnets": [{"cidr": "10.1.0.0/24", "server_address": "10.1.0.2"}],
            **kw,
        }
    )


def state(generation: int = 1, *, flows: str = "a", **kw: Any) -> NetworkApply:
    values: dict[str, Any] = {
        "generation": generation,
        "segments": [
            Segment(port_group_id="pg-flat", type=SegmentType.flat, local_tag=7),
            Segment(
                port_group_id="pg-vx",
                type=SegmentType.vxlan,
                segment_id=5001,
                local_tag=8,
                remotes=["10.9.0.6"],
            ),
        ],
        "uplink": Uplink(interface="eth2"),
        "dhcp": [dhcp()],
        "ports": [
            PortFlows(port="cn-a", flows=[f"table=0,priority=9,in_port=cn-a,actions={flows}"])
        ],
    }
    values.update(kw)
    return NetworkApply.model_validate(values)


# -- pure ------------------------------------------------------------------------------------


def test_host_network_uses_the_agents_bridge_and_underlay() -> None:
    net = host_network(state(), bridge="br-x", underlay=UNDERLAY)
    assert (
        net.bridge == "br-x" and net.underlay == UNDERLAY and net.uplink == Uplink(interface="eth2")
    )
    with pytest.raises(NetworkError, match="vxlan segments need an underlay"):
        host_network(state(), bridge="br-x", underlay=None)
    with pytest.raises(NetworkError, match="need an uplink"):
        host_network(state(uplink=None), bridge="br-x", underlay=UNDERLAY)
    with pytest.raises(NetworkError, match="own tunnel IP"):
        host_network(
            state(), bridge="br-x", underlay=Underlay(interface="e", address="10.9.0.6/24")
        )


def test_dhcp_services_go_on_the_agents_bridge_with_their_segments_tag() -> None:
    net = host_network(state(), bridge="br-x", underlay=UNDERLAY)
    [seg] = dhcp_segments(state(dhcp=[dhcp(tag=99)]), net)
    assert seg.bridge == "br-x" and seg.tag == 7
    with pytest.raises(NetworkError, match="without a segment") as exc:
        dhcp_segments(state(dhcp=[dhcp("pg-elsewhere")]), net)
    assert exc.value.context == {"port_groups": ["pg-elsewhere"]}
    with pytest.raises(NetworkError, match="twice"):
        dhcp_segments(state(dhcp=[dhcp(), dhcp()]), net)


def test_flow_table_holds_only_present_ports() -> None:
    ports = [PortFlows(port="cn-a", flows=["A"]), PortFlows(port="cn-b", flows=["B1", "B2"])]
    trunks = {"vx-1": 8, "cdh-1": 7}
    flows = flow_table(trunks, ports, {"cn-b", "cdh-1", "br-int"})
    assert flows[-2:] == ["B1", "B2"] and "A" not in flows
    base = flows[:-2]
    assert all(f.startswith(f"cookie={BASE_COOKIE:#x},") for f in base)
    assert any("in_port=cdh-1," in f and "load:7->NXM_NX_REG1[]" in f for f in base)
    assert not any("vx-1" in f for f in base)  # an absent trunk is never named
    assert flow_table({}, ports, set()) == flow_table({}, [], {"x"})


# -- the simulated plane ---------------------------------------------------------------------


async def test_generation_rule_and_digest(tmp_path: Path) -> None:
    plane = SimulatedNetworkPlane(underlay=UNDERLAY, data_dir=tmp_path)
    assert plane.digest == "" and plane.state is None
    s2 = state(2)
    assert await plane.apply(s2) == network_digest(s2) == plane.digest
    assert await plane.apply(state(1, flows="old")) == network_digest(s2)  # older: ignored
    assert plane.state == s2 and plane.applied == 1
    assert await plane.apply(state(2)) == network_digest(s2)  # same again: same digest
    s3 = state(3, flows="new")
    assert await plane.apply(s3) == network_digest(s3) != network_digest(s2)
    assert plane.applied == 3
    # generation is not part of the digest: the server and the agent agree on content
    assert network_digest(state(7)) == network_digest(state(8))


async def test_a_bad_state_fails_and_changes_nothing(tmp_path: Path) -> None:
    plane = SimulatedNetworkPlane(underlay=None, data_dir=tmp_path)  # no underlay: no vxlan
    flat = state(1, segments=state().segments[:1])
    await plane.apply(flat)
    before = (tmp_path / "network.json").read_bytes()
    with pytest.raises(NetworkError, match="underlay"):
        await plane.apply(state(2))
    assert plane.state == flat and plane.digest == network_digest(flat)
    assert (tmp_path / "network.json").read_bytes() == before


async def test_state_is_stored_private_and_loaded_again(tmp_path: Path) -> None:
    plane = SimulatedNetworkPlane(underlay=UNDERLAY, data_dir=tmp_path)
    s = state(4)
    await plane.apply(s)
    path = tmp_path / "network.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["network.json"]  # no temp file left

    again = SimulatedNetworkPlane(underlay=UNDERLAY, data_dir=tmp_path)
    again.load()
    assert again.state == s and again.digest == plane.digest
    await again.refresh()
    # a restarted agent keeps the generation rule
    assert await again.apply(state(3, flows="stale")) == network_digest(s)

    lazy = SimulatedNetworkPlane(underlay=UNDERLAY, data_dir=tmp_path)  # nobody called load
    assert await lazy.apply(state(3, flows="stale")) == network_digest(s)

    path.write_text("{not json")
    broken = SimulatedNetworkPlane(underlay=UNDERLAY, data_dir=tmp_path)
    broken.load()
    assert broken.state is None and broken.digest == ""  # the server sends it again


async def test_in_memory_plane(tmp_path: Path) -> None:
    plane = SimulatedNetworkPlane(underlay=UNDERLAY)
    await plane.apply(state(1))
    assert plane.digest == network_digest(state(1)) and list(tmp_path.iterdir()) == []
    assert plane.tunnel_ip == "10.9.0.5" and SimulatedNetworkPlane().tunnel_ip is None


# -- settings --------------------------------------------------------------------------------


def test_settings_underlay_and_ovs_db(tmp_path: Path) -> None:
    s = AgentSettings(data_dir=tmp_path)
    assert s.underlay() is None and s.network_bridge == "br-int"
    assert s.ovs_db_address() is None and s.ovs_env() == {}
    s = AgentSettings.model_validate({
        "data_dir": tmp_path, "underlay_interface": "eth1", "underlay_address": "10.9.0.5/16",
        "underlay_mtu": 1550, "ovs_db": "/run/ovs/db.sock",
    })  # fmt: skip
    ul = s.underlay(3)
    assert ul is not None and str(ul.address) == "10.9.0.8/16" and ul.bridge == "br-phy"
    assert ul.mtu == 1550 and ul.interface == "eth1"
    assert s.ovs_db_address() == "unix:/run/ovs/db.sock"
    assert s.ovs_env() == {"OVS_RUNDIR": "/run/ovs"}
    assert AgentSettings(data_dir=tmp_path, ovs_db="tcp:1.2.3.4:6640").ovs_env() == {}
    with pytest.raises(ValueError, match="both"):
        AgentSettings(data_dir=tmp_path, underlay_interface="eth1")


# -- through a runtime -----------------------------------------------------------------------


class CountingPlane(SimulatedNetworkPlane):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.refreshes = 0
        self.fail_refresh = False

    async def _refresh(self, state: NetworkApply) -> None:
        self.refreshes += 1
        if self.fail_refresh:
            raise NetworkError("OVS is down")


def runtime(tmp_path: Path, plane: SimulatedNetworkPlane | None) -> HostRuntime:
    return HostRuntime(
        name="rt",
        data_dir=tmp_path / "agent",
        compute=FakeCompute(),
        volumes=FakeVolumes(tmp_path / "disks"),
        inline_wait=5.0,
        pool_report_interval=3600,
        network=plane,
        network_refresh_interval=3600,
    )


def spec(vm_id: str = "vm-1") -> VmSpec:
    return VmSpec(vm_id=vm_id, name=vm_id, cpus=1, memory_mb=256, disk_gb=1, vnc_password="x")


async def test_network_apply_task_and_refresh_after_vm_start(tmp_path: Path) -> None:
    plane = CountingPlane(underlay=UNDERLAY, data_dir=tmp_path / "agent")
    rt = runtime(tmp_path, plane)
    await rt.start()
    try:
        await asyncio.sleep(0.05)  # the start-up refresh (nothing held yet) is done
        s = state(1)
        assert payload_key(s) == "network"
        status = await rt.submit(AgentTask(task_id="n1", payload=s))
        assert status.state == TaskState.succeeded, status
        assert status.result == {"digest": network_digest(s)}
        assert (await rt.facts()).tunnel_ip == "10.9.0.5"

        before = plane.refreshes
        await rt.submit(AgentTask(task_id="d1", payload=VmDefine(spec=spec())))
        assert plane.refreshes == before  # a define plugs no port
        status = await rt.submit(
            AgentTask(task_id="s1", payload=VmPower(kind="vm.start", vm_id="vm-1"))
        )
        assert status.state == TaskState.succeeded and plane.refreshes == before + 1

        plane.fail_refresh = True  # a failed refresh never fails the VM task
        stop = VmPower(kind="vm.stop", vm_id="vm-1")
        status = await rt.submit(AgentTask(task_id="s2", payload=stop))
        assert status.state == TaskState.succeeded and plane.refreshes == before + 2
    finally:
        await rt.stop()

    rt2 = runtime(tmp_path, CountingPlane(underlay=UNDERLAY, data_dir=tmp_path / "agent"))
    await rt2.start()
    try:
        assert rt2.network is not None and rt2.network.digest == network_digest(s)
    finally:
        await rt2.stop()


async def test_refreshed_at_start(tmp_path: Path) -> None:
    plane = CountingPlane(underlay=UNDERLAY, data_dir=tmp_path / "agent")
    (tmp_path / "agent").mkdir()
    await plane.apply(state(1))
    rt = runtime(tmp_path, CountingPlane(underlay=UNDERLAY, data_dir=tmp_path / "agent"))
    await rt.start()
    try:
        network = rt.network
        assert isinstance(network, CountingPlane)
        for _ in range(100):
            if network.refreshes:
                break
            await asyncio.sleep(0.01)
        assert network.refreshes == 1
    finally:
        await rt.stop()


async def test_without_a_plane(tmp_path: Path) -> None:
    rt = runtime(tmp_path, None)
    await rt.start()
    try:
        status = await rt.submit(AgentTask(task_id="n1", payload=state(1)))
        assert status.state == TaskState.failed and status.error is not None
        assert status.error.code == "invalid_input"
        assert (await rt.facts()).tunnel_ip is None
    finally:
        await rt.stop()


class _Link:
    def __init__(self) -> None:
        self.beats: list[Any] = []
        self.attachment = type("A", (), {"host_id": "h"})()

    async def post(self, path: str, body: Any, timeout: float = 0) -> None:
        self.beats.append(body)

    def reachable(self, ok: bool, exc: Exception | None = None) -> None:
        pass


async def test_heartbeat_carries_the_network_digest() -> None:
    link = _Link()
    digest: list[str | None] = [""]

    async def vms() -> list[Any]:
        return []

    async def facts() -> Any:
        return await FakeCompute().facts()

    hb = Heartbeater(
        name="t",
        interval=2.0,
        link=lambda: link,  # type: ignore[arg-type,return-value]
        facts=facts,
        vms=vms,
        started_at=datetime.now(UTC),
        network_digest=lambda: digest[0],
    )
    assert await hb.beat_once()
    assert link.beats[-1].network_digest == ""
    digest[0] = "abc"
    assert await hb.beat_once()
    assert link.beats[-1].network_digest == "abc"
