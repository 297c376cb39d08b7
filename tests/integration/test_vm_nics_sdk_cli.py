"""VM NICs through the SDK and the CLI (one in-process stack, simulated hosts, real HTTP).

A switch attached to the stack's ``default`` cluster carries the VLAN port group ``npg`` with
the IPv4 subnet ``ns4``; the security groups ``web`` and ``ssh`` exist and an uploaded tiny
qcow2 is the image. Each test creates VMs with NICs (``vm create --nic``), lists them, hot-plugs
one, changes its policy and unplugs it again; the addresses come from and go back to ``ns4``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InvalidInput, NotFound
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import AsyncClient, Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD

CIDR = "10.20.0.0/24"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def world(url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Switch ``nsw`` on the ``default`` cluster, port group ``npg`` with subnet ``ns4``,
    security groups ``web`` and ``ssh``, the image ``tiny``."""
    image = tmp_path_factory.mktemp("image") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        c.switches.create("nsw", uplink="eth1", clusters=["default"]).wait()
        c.port_groups.create("npg", switch="nsw", type="vlan", segment_id=120).wait()
        c.subnets.create("ns4", port_group="npg", cidr=CIDR).wait()
        c.security_groups.create("web", rules=[{"direction": "ingress", "protocol": "tcp",
                                                "port_min": 80}]).wait()  # fmt: skip
        c.security_groups.create("ssh").wait()
        c.images.import_file("tiny", image).wait()


@pytest.fixture
def admin(url: str, world: None) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c
        for vm in c.vms.iter():  # every test leaves no VM behind (nor NIC addresses)
            c.vms.delete(vm.id, expunge=True).wait(timeout=60)
        assert nic_addresses(c) == {}


def corral(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=CliState())


def rows(output: str) -> list[list[str]]:
    """The cells of a rich table (header first), split on blanks."""
    return [line.split() for line in output.splitlines() if line.strip() and "─" not in line]


@pytest.fixture
def cli(admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")


def in_subnet(address: str) -> bool:
    return address.startswith("10.20.0.")


def nic_addresses(c: Client) -> dict[str, str]:
    """The addresses of ``ns4`` allocated to NICs, and the NIC of each (the subnet's DHCP
    server has one of its own)."""
    return {a.address: a.nic_id for a in c.subnets.allocations("ns4") if a.nic_id is not None}


def test_sdk_vm_nics(admin: Client) -> None:
    web, ssh = admin.security_groups.get("web").id, admin.security_groups.get("ssh").id
    pg = admin.port_groups.get("npg").id
    admin.vms.create(
        "sn1",
        image="tiny",
        cpus=1,
        memory_mb=64,
        disk_gb=1,
        nics=[
            {"port_group": "npg"},
            {"port_group": "npg", "ips": ["10.20.0.50"], "security_groups": ["web", "ssh"]},
        ],
    ).wait(timeout=60)
    vm = admin.vms.get("sn1")
    nics = admin.vm_nics.list("sn1")
    assert [(n.device, n.port_group_id, n.vm_id) for n in nics] == [(0, pg, vm.id), (1, pg, vm.id)]
    assert len(nics[0].ips) == 1 and in_subnet(nics[0].ips[0])
    assert nics[1].ips == ["10.20.0.50"] and nics[1].security_groups == [web, ssh]
    assert (nics[0].model, nics[0].ingress_default, nics[0].spoof_check) == ("virtio", "deny", True)
    assert admin.vm_nics.get("sn1", 1) == admin.vm_nics.get(vm.id, nics[1].mac) == nics[1]
    with pytest.raises(NotFound):
        admin.vm_nics.get("sn1", 7)
    with pytest.raises(InvalidInput):  # refused on the client side
        admin.vm_nics.add("sn1", "npg", model="ne2k")

    op = admin.vm_nics.add("sn1", "npg", ips=["10.20.0.60"], model="e1000", inbound_kbps=1000)
    assert (op.type, op.target_type) == ("vm.nic.add", "nic")
    op.wait(timeout=60)
    added = admin.vm_nics.get("sn1", 2)
    assert added.id == op.target_id and added.vm_id == vm.id
    assert (added.ips, added.model, added.inbound_kbps) == (["10.20.0.60"], "e1000", 1000)

    op = admin.vm_nics.update("sn1", 2, security_groups=["ssh", "web"], ingress_default="allow")
    assert (op.type, op.target_id) == ("vm.nic.update", added.id)
    op.wait(timeout=60)
    changed = admin.vm_nics.get("sn1", added.id)
    assert (changed.security_groups, changed.ingress_default) == ([ssh, web], "allow")
    admin.vm_nics.update("sn1", added.id, security_groups=[], spoof_check=False).wait(timeout=60)
    changed = admin.vm_nics.get("sn1", 2)
    assert (changed.security_groups, changed.spoof_check) == ([], False)

    op = admin.vm_nics.remove("sn1", added.mac, timeout=5)
    assert op.type == "vm.nic.remove"
    op.wait(timeout=60)
    nics = admin.vm_nics.list("sn1")
    assert [n.device for n in nics] == [0, 1]
    assert nic_addresses(admin) == {n.ips[0]: n.id for n in nics}  # 10.20.0.60 is free again


async def test_async_client(url: str, admin: Client) -> None:
    admin.vms.create("an1", image="tiny", cpus=1, memory_mb=64, disk_gb=1).wait(timeout=60)
    async with await AsyncClient.login(url, "admin", ADMIN_PASSWORD) as c:
        assert await c.vm_nics.list("an1") == []
        await (await c.vm_nics.add("an1", "npg", subnets=[])).wait(timeout=60)
        nics = await c.vm_nics.list("an1")
        assert [(n.device, n.ips) for n in nics] == [(0, [])]
        await (await c.vm_nics.remove("an1", 0)).wait(timeout=60)
        assert await c.vm_nics.list("an1") == []


def test_cli_vm_nics(admin: Client, cli: None) -> None:
    r = corral("vm", "create", "cn1", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--disk", "1", "--nic", "npg",
               "--nic", "npg:ip=10.20.0.50,sg=web+ssh,model=e1000")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("VM cn1 created")
    nics = admin.vm_nics.list("cn1")

    r = corral("vm", "nic", "list", "cn1")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == ["DEVICE", "ID", "PORT", "GROUP", "MAC", "MODEL", "IPS", "GROUPS"]
    assert table[1] == ["0", nics[0].id, "npg", nics[0].mac, "virtio", nics[0].ips[0], "-"]
    assert table[2] == ["1", nics[1].id, "npg", nics[1].mac, "e1000", "10.20.0.50", "web,ssh"]
    shown = json.loads(corral("-o", "json", "vm", "nic", "list", "cn1").stdout)
    assert [n["id"] for n in shown] == [n.id for n in nics]
    r = corral("vm", "nic", "show", "cn1", nics[1].mac)
    assert r.exit_code == 0, r.output
    fields = dict(line.split(maxsplit=1) for line in r.stdout.splitlines())
    assert (fields["id"].strip(), fields["model"].strip()) == (nics[1].id, "e1000")

    r = corral("vm", "nic", "add", "cn1", "--port-group", "npg", "--ip", "10.20.0.60",
               "-g", "ssh", "--allowed-pair", "10.20.0.100/32")  # fmt: skip
    assert r.exit_code == 0, r.output
    added = admin.vm_nics.get("cn1", 2)
    assert r.stdout == f"NIC 2 of VM cn1 added ({added.id}): {added.mac}, 10.20.0.60.\n"
    assert added.security_groups == [admin.security_groups.get("ssh").id]
    assert [p.cidr for p in added.allowed_pairs] == ["10.20.0.100/32"]

    r = corral("vm", "nic", "update", "cn1", "2", "-g", "web", "-g", "ssh",
               "--ingress-default", "allow", "--no-spoof-check")  # fmt: skip
    assert (r.exit_code, r.stdout) == (0, "NIC 2 of VM cn1 updated.\n"), r.output
    assert rows(corral("vm", "nic", "list", "cn1").stdout)[3][-1] == "web,ssh"
    changed = admin.vm_nics.get("cn1", 2)
    assert (changed.ingress_default, changed.spoof_check) == ("allow", False)
    r = corral("vm", "nic", "update", "cn1", added.id, "--no-security-groups",
               "--no-allowed-pairs")  # fmt: skip
    assert r.exit_code == 0, r.output
    changed = admin.vm_nics.get("cn1", 2)
    assert (changed.security_groups, changed.allowed_pairs) == ([], [])

    r = corral("vm", "nic", "remove", "cn1", "2", "--timeout", "5")
    assert (r.exit_code, r.stdout) == (0, "NIC 2 removed from VM cn1.\n"), r.output
    assert [n.device for n in admin.vm_nics.list("cn1")] == [0, 1]
    r = corral("vm", "nic", "show", "cn1", "2")
    assert r.exit_code == 1 and "Error [not_found]" in r.stderr
    r = corral("vm", "nic", "remove", "cn1", "0", "--no-wait")
    assert r.exit_code == 0, r.output
    assert admin.operations.wait(r.stdout.strip(), timeout=60).status == "succeeded"
    assert [n.device for n in admin.vm_nics.list("cn1")] == [1]


def test_cli_refusals(admin: Client, cli: None) -> None:
    r = corral("vm", "create", "cn2", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--disk", "1", "--no-start")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = corral("vm", "nic", "add", "cn2", "-p", "npg", "--ip", "10.20.0.70", "-g", "nope")
    assert r.exit_code == 1 and "Error [not_found]" in r.stderr, r.output
    r = corral("vm", "nic", "update", "cn2", "0", "--spoof-check")
    assert r.exit_code == 1 and "Error [not_found]" in r.stderr, r.output
    assert admin.vm_nics.list("cn2") == [] and nic_addresses(admin) == {}
    r = corral("vm", "create", "cn3", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--nic", "npg:ip=10.99.0.1")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "Error [invalid_input]: NIC 0: 10.99.0.1 is in no subnet of port group 'npg'" in r.stderr
    assert [vm.name for vm in admin.vms.iter()] == ["cn2"]
    r = corral("vm", "create", "cn3", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--nic", "npg:nope=1")  # fmt: skip
    assert r.exit_code == 2 and "unknown key 'nope'" in r.output
