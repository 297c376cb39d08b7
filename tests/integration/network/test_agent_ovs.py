"""The agent's Open vSwitch driver on a private OVS instance: bridges and ports converge
idempotently (tag, type, options), flows are replaced atomically and exactly (applying the same
set twice changes nothing, a changed set leaves no stale flow), and after ``ovs-vswitchd`` loses
its flows a re-apply restores them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from corral.agent.network.ovs import Ovs
from corral.api.errors import NetworkError
from corral.netflows.firewall import FwPort, compile_ports
from tests.support.ovs import Ovs as LabOvs
from tests.support.ovs import ns_host, ovs_available

pytestmark = [
    pytest.mark.skipif(not ovs_available(), reason="Open vSwitch is not installed"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ovs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Ovs, LabOvs]]:
    root: Path = tmp_path_factory.mktemp("agent-ovs")
    with ns_host(root, f"cao-{uuid.uuid4().hex[:6]}") as inst:
        yield Ovs(db=inst.db, env=inst.env), inst


async def test_bridge_and_ports_converge(ovs: tuple[Ovs, LabOvs]) -> None:
    o, inst = ovs
    for _ in range(2):
        await o.ensure_bridge("br-t1")
    assert inst.vsctl("get", "bridge", "br-t1", "fail_mode").strip() == "secure"
    assert inst.vsctl("get", "bridge", "br-t1", "datapath_type").strip() == "netdev"
    await o.ensure_port("br-t1", "vx100", type="vxlan", tag=100,
                        options={"remote_ip": "192.0.2.2", "key": "100"}, ofport=40)  # fmt: skip
    await o.ensure_port("br-t1", "vx100", type="vxlan", tag=101,
                        options={"remote_ip": "192.0.2.2", "key": "100"}, ofport=40)  # fmt: skip
    assert await o.ports("br-t1") == ["vx100"]
    assert inst.vsctl("get", "port", "vx100", "tag").strip() == "101"
    assert await o.ofport("vx100") == 40
    await o.delete_port("br-t1", "vx100")
    await o.delete_port("br-t1", "vx100")  # absent: success
    assert await o.ports("br-t1") == []
    with pytest.raises(NetworkError):
        await o.ofport("nope")


async def test_flows_are_replaced_exactly_and_restored(ovs: tuple[Ovs, LabOvs]) -> None:
    o, inst = ovs
    await o.ensure_bridge("br-t2")
    a = FwPort(ofport=10, mac="02:00:00:00:00:0a", ips=("10.1.0.10",), zone=10, cookie=10)
    b = FwPort(ofport=20, mac="02:00:00:00:00:14", ips=("10.1.0.20",), zone=20, cookie=20)
    both = compile_ports([a, b])
    await o.replace_flows("br-t2", both)
    first = await o.dump_flows("br-t2")
    assert len(first) == len(both)
    await o.replace_flows("br-t2", both)
    assert await o.dump_flows("br-t2") == first
    await o.replace_flows("br-t2", compile_ports([a]))
    left = await o.dump_flows("br-t2")
    assert len(left) == len(compile_ports([a]))
    assert not any("cookie=0x14" in f for f in left)
    inst.ofctl("del-flows", "br-t2")  # what a restarted ovs-vswitchd leaves
    assert await o.dump_flows("br-t2") == []
    await o.replace_flows("br-t2", compile_ports([a]))
    assert len(await o.dump_flows("br-t2")) == len(left)
    with pytest.raises(NetworkError):
        await o.replace_flows("br-t2", ["table=0,actions=bogus_action"])
    assert len(await o.dump_flows("br-t2")) == len(left)  # a bad bundle changes nothing
