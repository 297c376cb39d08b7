"""Switches, port groups and subnets through the SDK and the CLI (one in-process stack, real
HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import Conflict, InUse, InvalidInput, NameTaken, NotFound
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import AsyncClient, Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture
def admin(url: str) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c


def corral(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=CliState())


@pytest.fixture
def cli(admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")


def test_sdk_switch_port_group_subnet_lifecycle(admin: Client) -> None:
    host = admin.hosts.list().items[0]
    op = admin.switches.create(
        "sdk-sw", uplink="bond0", uplinks={host.name: "eth7"}, clusters=[host.cluster_id], mtu=9000
    ).wait()
    sw = admin.switches.get("sdk-sw")
    assert sw.id == op.target_id and sw.uplinks == {host.id: "eth7"}
    assert sw.clusters == [host.cluster_id] and sw.mtu == 9000
    admin.switches.detach_cluster("sdk-sw", host.cluster_id).wait()
    assert admin.switches.get("sdk-sw").clusters == []
    admin.switches.attach_cluster("sdk-sw", host.cluster_id).wait()
    admin.switches.update("sdk-sw", uplinks={}, mtu=1600).wait()
    assert admin.switches.get("sdk-sw").uplinks == {}
    with pytest.raises(InvalidInput):  # checked on the client side already
        admin.switches.create("bad", mtu=100)

    admin.port_groups.create("sdk-x", switch="sdk-sw", type="vxlan", segment_id=7001).wait()
    admin.port_groups.create("sdk-v", switch="sdk-sw", type="vlan", segment_id=42).wait()
    with pytest.raises(NameTaken) as taken:
        admin.port_groups.create("sdk-v2", switch="sdk-sw", type="vlan", segment_id=42)
    assert taken.value.context["port_group"] == "sdk-v"
    assert admin.port_groups.get("sdk-x").mtu == 1550
    assert [p.name for p in admin.port_groups.iter(switch="sdk-sw", sort="name")] == [
        "sdk-v",
        "sdk-x",
    ]
    admin.port_groups.update("sdk-v", description="prod").wait()

    admin.subnets.create(
        "sdk-s4", port_group="sdk-v", cidr="192.168.50.0/28", dns_servers=["192.168.50.1"],
        ranges=[("192.168.50.10", "192.168.50.11")], reserved=["192.168.50.11"],
    ).wait()  # fmt: skip
    s4 = admin.subnets.get("sdk-s4")
    assert (s4.gateway, s4.available, s4.used) == ("192.168.50.1", 1, 0)
    held = admin.subnets.hold("sdk-s4")
    assert (held.address, held.subnet_id, held.nic_id) == ("192.168.50.10", s4.id, None)
    assert admin.subnets.hold("sdk-s4", "192.168.50.3").address == "192.168.50.3"
    with pytest.raises(InUse):
        admin.subnets.hold("sdk-s4", "192.168.50.3")
    with pytest.raises(Conflict) as full:
        admin.subnets.hold("sdk-s4")
    assert full.value.context["reason"] == "subnet_full"
    assert [a.address for a in admin.subnets.allocations("sdk-s4")] == [
        "192.168.50.3", "192.168.50.10"]  # fmt: skip
    with pytest.raises(InUse):
        admin.subnets.delete("sdk-s4")
    admin.subnets.release("sdk-s4", "192.168.50.10").wait()
    assert admin.subnets.get("sdk-s4").available == 1
    admin.subnets.update("sdk-s4", ranges=[], reserved=[]).wait()  # default ranges
    assert admin.subnets.get("sdk-s4").available == 14 - 1 - 1  # less the gateway and .3
    with pytest.raises(NotFound):
        admin.subnets.release("sdk-s4", "192.168.50.10")
    admin.subnets.release("sdk-s4", "192.168.50.3").wait()
    assert admin.subnets.count(q="port_group.switch.name=sdk-sw") == 1

    with pytest.raises(InUse):
        admin.switches.delete("sdk-sw")
    admin.subnets.delete("sdk-s4").wait()
    for name in ("sdk-x", "sdk-v"):
        admin.port_groups.delete(name).wait()
    admin.switches.delete("sdk-sw").wait()
    assert admin.switches.count(q="name=sdk-sw") == 0


async def test_async_sdk_holds_in_parallel(url: str) -> None:
    async with await AsyncClient.login(url, "admin", ADMIN_PASSWORD) as c:
        await (await c.switches.create("async-sw")).wait()
        await (await c.port_groups.create("async-pg", switch="async-sw", type="flat")).wait()
        await (await c.subnets.create("async-v6", port_group="async-pg", cidr="fd42::/64")).wait()
        import asyncio

        held = await asyncio.gather(*(c.subnets.hold("async-v6") for _ in range(20)))
        assert len({h.address for h in held}) == 20
        assert (await c.subnets.get("async-v6")).used == 20
        for h in held:
            await (await c.subnets.release("async-v6", h.address)).wait()
        await (await c.subnets.delete("async-v6")).wait()
        await (await c.port_groups.delete("async-pg")).wait()
        await (await c.switches.delete("async-sw")).wait()


def test_cli_network_commands(admin: Client, cli: None) -> None:
    host = admin.hosts.list().items[0]
    r = corral("switch", "create", "cli-sw", "--mtu", "9000", "--uplink", "bond0",
               "--host-uplink", f"{host.name}=eth3", "--cluster", host.cluster_id)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Switch cli-sw created" in r.stdout
    assert admin.switches.get("cli-sw").uplinks == {host.id: "eth3"}
    r = corral("switch", "create", "cli-bad", "--host-uplink", "no-equals")
    assert r.exit_code != 0 and "HOST=INTERFACE" in r.output
    r = corral("switch", "list")
    assert r.exit_code == 0 and "cli-sw" in r.stdout and "9000" in r.stdout
    assert corral("switch", "detach", "cli-sw", host.cluster_id).exit_code == 0
    assert corral("switch", "attach", "cli-sw", host.cluster_id).exit_code == 0
    r = corral("switch", "update", "cli-sw", "--clear-host-uplinks", "--mtu", "1600")
    assert r.exit_code == 0, r.output
    assert admin.switches.get("cli-sw").uplinks == {}

    r = corral(
        "port-group", "create", "cli-pg", "--switch", "cli-sw", "--type", "vlan", "--vlan", "300"
    )
    assert r.exit_code == 0, r.output
    r = corral("port-group", "create", "cli-pg2", "-s", "cli-sw", "-t", "vlan", "--vlan", "300")
    assert r.exit_code == 1 and "name_taken" in r.output and "cli-pg" in r.output
    r = corral("port-group", "list", "--switch", "cli-sw")
    assert r.exit_code == 0 and "cli-pg" in r.stdout and "300" in r.stdout
    r = corral("-o", "json", "port-group", "list", "--switch", admin.switches.get("cli-sw").id)
    assert [p["name"] for p in json.loads(r.stdout)["items"]] == ["cli-pg"]

    r = corral("subnet", "create", "cli-s4", "-p", "cli-pg", "--cidr", "172.20.0.0/24",
               "--range", "172.20.0.100-172.20.0.101", "--reserved", "172.20.0.101",
               "--dns", "172.20.0.53", "--no-dhcp")  # fmt: skip
    assert r.exit_code == 0, r.output
    s4 = admin.subnets.get("cli-s4")
    assert (s4.dhcp, s4.dns_servers, s4.available) == (False, ["172.20.0.53"], 1)
    r = corral("subnet", "create", "cli-bad", "-p", "cli-pg", "--cidr", "172.20.0.0/25")
    assert r.exit_code == 2 and "overlaps" in r.output  # invalid input: a usage error
    r = corral("subnet", "create", "cli-bad", "-p", "cli-pg", "--cidr", "10.9.0.0/24",
               "--range", "10.9.0.5")  # fmt: skip
    assert r.exit_code != 0 and "FIRST-LAST" in r.output
    r = corral("subnet", "hold", "cli-s4")
    assert r.exit_code == 0 and r.stdout.strip() == "172.20.0.100"
    r = corral("-o", "json", "subnet", "hold", "cli-s4", "172.20.0.7")
    assert r.exit_code == 0 and json.loads(r.stdout)["address"] == "172.20.0.7"
    r = corral("subnet", "hold", "cli-s4")
    assert r.exit_code == 1 and "subnet_full" in r.output
    r = corral("subnet", "allocations", "cli-s4")
    assert r.exit_code == 0 and r.stdout.index("172.20.0.7") < r.stdout.index("172.20.0.100")
    r = corral("subnet", "list", "--port-group", "cli-pg")
    assert r.exit_code == 0 and "cli-s4" in r.stdout and "172.20.0.0/24" in r.stdout
    r = corral("subnet", "delete", "cli-s4")
    assert r.exit_code == 1 and "in_use" in r.output
    for address in ("172.20.0.7", "172.20.0.100"):
        r = corral("subnet", "release", "cli-s4", address)
        assert r.exit_code == 0 and f"Released {address}" in r.stdout
    r = corral("subnet", "update", "cli-s4", "--default-ranges", "--clear-reserved", "--dhcp")
    assert r.exit_code == 0, r.output
    s4 = admin.subnets.get("cli-s4")
    assert s4.dhcp and s4.reserved == [] and s4.available == 253
    r = corral("-o", "json", "subnet", "show", "cli-s4")
    assert json.loads(r.stdout)["ranges"] == [{"start": "172.20.0.2", "end": "172.20.0.254"}]

    r = corral("port-group", "delete", "cli-pg")
    assert r.exit_code == 1 and "cli-s4" in r.output
    assert corral("subnet", "delete", "cli-s4").exit_code == 0
    assert corral("port-group", "delete", "cli-pg").exit_code == 0
    assert corral("switch", "delete", "cli-sw").exit_code == 0
    assert admin.switches.count(q="name~cli-*") == 0
