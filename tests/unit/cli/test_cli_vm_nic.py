"""``corral vm nic`` and ``corral vm create --nic`` against a scripted server: the ``--nic``
mini-syntax, the requests sent, the tables and messages printed, the usage errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from corral.api.nics import Nic, NicCreate
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.cli import config as cli_config
from corral.cli.app import app
from corral.cli.common import CliState
from corral.cli.vm_nic import nic_spec, parse_pair

URL = "http://corral.test"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
VM_ID = "a" * 32
PG_ID = "b" * 32
WEB_ID, SSH_ID = "c" * 32, "d" * 32


def nic(device: int, **fields: Any) -> Nic:
    values: dict[str, Any] = {
        "id": str(device) * 32,
        "vm_id": VM_ID,
        "device": device,
        "port_group_id": PG_ID,
        "mac": f"02:00:00:00:00:0{device}",
        "model": "virtio",
        "ingress_default": "deny",
        "egress_default": "allow",
        "spoof_check": True,
        "port": f"tap{device}",
    }
    return Nic(**(values | fields))


class Server:
    """VM web1 with NICs 0 (two addresses, groups web and ssh) and 1 (no address, no group);
    port groups and security groups readable by name unless ``hide_names``; every change answers
    a finished operation on the VM."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.hide_names = False
        self.nics = [
            nic(0, ips=["10.0.0.5", "fd00::5"], security_groups=[WEB_ID, SSH_ID]),
            nic(1, model="e1000"),
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api/v1")
        if request.method != "GET":
            op = OperationModel(
                id="op-1",
                type="vm.nic.x",
                target_type="nic",
                target_id=self.nics[-1].id if self.nics else None,  # the NIC acted on
                status=OperationStatus.succeeded,
                progress=100,
                created_at=NOW,
            )
            return httpx.Response(202, content=op.model_dump_json())
        if path in ("/port-groups", "/security-groups") and self.hide_names:
            return httpx.Response(403, json={"error": {"code": "forbidden", "message": "no"}})
        if path == "/port-groups":
            return _page([{"id": PG_ID, "name": "web-pg"}])
        if path == "/security-groups":
            return _page([{"id": WEB_ID, "name": "web"}, {"id": SSH_ID, "name": "ssh"}])
        if path.endswith("/nics"):
            return httpx.Response(200, json=[n.model_dump(mode="json") for n in self.nics])
        ref = path.rsplit("/", 1)[-1]
        found = [n for n in self.nics if ref in (n.id, n.mac, str(n.device))]
        return httpx.Response(200, content=found[0].model_dump_json())

    def sent(self, method: str) -> list[tuple[str, Any, dict[str, str]]]:
        """(path, JSON body, query) of the ``method`` requests."""
        return [
            (
                r.url.path.removeprefix("/api/v1"),
                json.loads(r.content) if r.content else None,
                dict(r.url.params),
            )
            for r in self.requests
            if r.method == method
        ]


def _page(items: list[Any]) -> httpx.Response:
    return httpx.Response(
        200, json={"items": items, "total": len(items), "offset": 0, "limit": 100}
    )


@pytest.fixture
def server() -> Server:
    cli_config.save(cli_config.Config(url=URL, token="t", username="admin"))
    return Server()


def run(server: Server, *args: str) -> Result:
    state = CliState(transport=httpx.MockTransport(server))
    return CliRunner().invoke(app, list(args), obj=state)


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip() and "─" not in line]


def test_nic_syntax() -> None:
    assert nic_spec("web-pg") == {"port_group": "web-pg"}
    assert nic_spec("web-pg:") == {"port_group": "web-pg"}
    spec = nic_spec("web-pg:ip=10.0.0.5,sg=web+ssh,model=e1000")
    assert spec == {
        "port_group": "web-pg",
        "ips": ["10.0.0.5"],
        "security_groups": ["web", "ssh"],
        "model": "e1000",
    }
    spec = nic_spec(
        "pg: ip=fd00::5+10.0.0.6 , ip=10.0.0.7, subnet=s4+s6, mac=02:00:00:00:00:AA,"
        " ingress=allow, egress=deny, spoof=off, in=1000, out=2000,"
        " pair=10.0.0.100/32@02:00:00:00:00:bb+10.9.0.0/16, SG=db"
    )
    assert spec == {
        "port_group": "pg",
        "ips": ["fd00::5", "10.0.0.6", "10.0.0.7"],  # '+' and repeated keys, in order
        "subnets": ["s4", "s6"],
        "mac": "02:00:00:00:00:AA",  # its colons are no separators; checked by the SDK
        "ingress_default": "allow",
        "egress_default": "deny",
        "spoof_check": False,
        "inbound_kbps": 1000,
        "outbound_kbps": 2000,
        "allowed_pairs": [
            {"cidr": "10.0.0.100/32", "mac": "02:00:00:00:00:bb"},
            {"cidr": "10.9.0.0/16"},
        ],
        "security_groups": ["db"],
    }
    assert nic_spec("pg:subnet=none,spoof=yes") == {
        "port_group": "pg",
        "subnets": [],
        "spoof_check": True,
    }
    for spec in (nic_spec("pg:sg=a+b,model=rtl8139"), nic_spec("pg:subnet=none")):
        NicCreate.model_validate(spec)  # what the parser makes is a NicCreate


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected PG"),
        (":ip=10.0.0.5", "expected PG"),
        ("pg:ip", "is not KEY=VALUE"),
        ("pg:vlan=5", "unknown key 'vlan'"),
        ("pg:mac=", "mac needs a value"),
        ("pg:model=virtio,model=e1000", "model given twice"),
        ("pg:in=fast", "expected kbit/s"),
        ("pg:in=-5", "expected kbit/s"),
        ("pg:spoof=maybe", "expected on or off"),
        ("pg:subnet=none+s4", "subnet=none with other subnets"),
        ("pg:subnet=s4,subnet=none", "subnet=none with other subnets"),
        ("pg:subnet=none,subnet=s4", "subnet=none with other subnets"),
        ("pg:pair=@02:00:00:00:00:01", "expected CIDR or CIDR@MAC"),
    ],
)
def test_nic_syntax_errors(text: str, why: str) -> None:
    with pytest.raises(typer.BadParameter, match=why):
        nic_spec(text)


def test_allowed_pairs() -> None:
    assert parse_pair("10.0.0.1/32") == {"cidr": "10.0.0.1/32"}
    assert parse_pair("10.0.0.1/32@02:00:00:00:00:01") == {
        "cidr": "10.0.0.1/32",
        "mac": "02:00:00:00:00:01",
    }
    with pytest.raises(typer.BadParameter):
        parse_pair("10.0.0.1/32@")


def test_vm_create_sends_the_nics(server: Server) -> None:
    r = run(server, "vm", "create", "web1", "-i", "img", "--offering", "small", "--no-wait",
            "--nic", "web-pg", "--nic", "db-pg:ip=10.1.0.5,sg=db+ssh,model=e1000,spoof=off")  # fmt: skip
    assert (r.exit_code, r.stdout) == (0, "op-1\n"), r.output
    [(path, body, _)] = server.sent("POST")
    assert path == "/vms"
    assert body["nics"] == [
        {"port_group": "web-pg"},
        {
            "port_group": "db-pg",
            "ips": ["10.1.0.5"],
            "security_groups": ["db", "ssh"],
            "model": "e1000",
            "spoof_check": False,
        },
    ]
    r = run(server, "vm", "create", "web2", "-i", "img", "--offering", "small", "--no-wait")
    assert r.exit_code == 0 and "nics" not in server.sent("POST")[-1][1]


def test_vm_create_refuses_a_bad_nic_before_sending(server: Server) -> None:
    r = run(server, "vm", "create", "web1", "-i", "img", "--offering", "small",
            "--nic", "web-pg:colour=red")  # fmt: skip
    assert r.exit_code == 2 and "unknown key 'colour'" in r.output
    r = run(server, "vm", "create", "web1", "-i", "img", "--offering", "small",
            "--nic", "web-pg:model=ne2k")  # fmt: skip
    assert r.exit_code == 2 and "Error [invalid_input]" in r.stderr and "nics.0.model" in r.stderr
    assert server.requests == []


def test_list_and_show(server: Server) -> None:
    r = run(server, "vm", "nic", "list", "web1")
    assert r.exit_code == 0, r.output
    assert rows(r.stdout) == [
        ["DEVICE", "ID", "PORT", "GROUP", "MAC", "MODEL", "IPS", "GROUPS"],
        ["0", "0" * 32, "web-pg", "02:00:00:00:00:00", "virtio", "10.0.0.5,fd00::5", "web,ssh"],
        ["1", "1" * 32, "web-pg", "02:00:00:00:00:01", "e1000", "-", "-"],
    ]
    server.hide_names = True  # names the caller may not read: ids
    table = rows(run(server, "vm", "nic", "list", "web1").stdout)
    assert (table[1][2], table[1][-1]) == (PG_ID, f"{WEB_ID},{SSH_ID}")

    server.requests.clear()
    r = run(server, "-o", "json", "vm", "nic", "list", "web1")
    assert [n["device"] for n in json.loads(r.stdout)] == [0, 1]
    assert len(server.requests) == 1  # no name lookups

    r = run(server, "vm", "nic", "show", "web1", "02:00:00:00:00:01")
    assert r.exit_code == 0, r.output
    fields = dict(line.split(maxsplit=1) for line in r.stdout.splitlines())
    assert (fields["model"].strip(), fields["port"].strip()) == ("e1000", "tap1")
    r = run(server, "vm", "nic", "show", "web1", "0", "-o", "json")
    assert json.loads(r.stdout)["ips"] == ["10.0.0.5", "fd00::5"]

    server.nics = []
    r = run(server, "vm", "nic", "list", "web1")
    assert (r.exit_code, r.stdout) == (0, "VM web1 has no NICs.\n")


def test_add(server: Server) -> None:
    r = run(server, "vm", "nic", "add", "web1", "--port-group", "web-pg")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"NIC 1 of VM web1 added ({'1' * 32}): 02:00:00:00:00:01, no address.\n"
    assert server.sent("POST")[-1] == (
        "/vms/web1/nics",
        {
            "port_group": "web-pg",
            "ips": [],
            "model": "virtio",
            "security_groups": [],
            "ingress_default": "deny",
            "egress_default": "allow",
            "spoof_check": True,
            "allowed_pairs": [],
        },
        {},
    )
    r = run(server, "vm", "nic", "add", "web1", "-p", "web-pg", "-s", "s4", "--subnet", "s6",
            "--ip", "10.0.0.9", "-m", "e1000", "--mac", "02:00:00:00:00:AA", "-g", "web",
            "--security-group", "ssh", "--ingress-default", "allow", "--egress-default", "deny",
            "--no-spoof-check", "--allowed-pair", "10.0.0.100/32",
            "--allowed-pair", "10.0.0.101/32@02:00:00:00:00:bb",
            "--inbound-kbps", "1000", "--outbound-kbps", "2000", "--no-wait")  # fmt: skip
    assert (r.exit_code, r.stdout) == (0, "op-1\n"), r.output
    assert server.sent("POST")[-1][1] == {
        "port_group": "web-pg",
        "subnets": ["s4", "s6"],
        "ips": ["10.0.0.9"],
        "model": "e1000",
        "mac": "02:00:00:00:00:aa",
        "security_groups": ["web", "ssh"],
        "ingress_default": "allow",
        "egress_default": "deny",
        "spoof_check": False,
        "allowed_pairs": [
            {"cidr": "10.0.0.100/32"},
            {"cidr": "10.0.0.101/32", "mac": "02:00:00:00:00:bb"},
        ],
        "inbound_kbps": 1000,
        "outbound_kbps": 2000,
    }
    r = run(server, "vm", "nic", "add", "web1", "-p", "web-pg", "--no-address", "--no-wait")
    assert r.exit_code == 0 and server.sent("POST")[-1][1]["subnets"] == []


def test_add_usage_errors(server: Server) -> None:
    r = run(server, "vm", "nic", "add", "web1")
    assert r.exit_code == 2 and "--port-group" in r.output
    r = run(server, "vm", "nic", "add", "web1", "-p", "pg", "--no-address", "--ip", "10.0.0.1")
    assert r.exit_code == 2 and "--no-address with --subnet/--ip" in r.output
    r = run(server, "vm", "nic", "add", "web1", "-p", "pg", "--model", "ne2k")
    assert r.exit_code == 2
    r = run(server, "vm", "nic", "add", "web1", "-p", "pg", "--mac", "nope")
    assert r.exit_code == 2 and "not a MAC address" in r.stderr
    assert server.requests == []


def test_update(server: Server) -> None:
    r = run(server, "vm", "nic", "update", "web1", "0", "-g", "ssh", "-g", "web")
    assert (r.exit_code, r.stdout) == (0, "NIC 0 of VM web1 updated.\n"), r.output
    assert server.sent("PATCH")[-1] == ("/vms/web1/nics/0", {"security_groups": ["ssh", "web"]}, {})
    r = run(
        server, "vm", "nic", "update", "web1", "0", "--no-security-groups", "--no-allowed-pairs"
    )
    assert r.exit_code == 0, r.output
    assert server.sent("PATCH")[-1][1] == {"security_groups": [], "allowed_pairs": []}
    r = run(server, "vm", "nic", "update", "web1", "0", "--ingress-default", "allow",
            "--egress-default", "deny", "--spoof-check", "--allowed-pair", "10.0.0.0/24")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert server.sent("PATCH")[-1][1] == {
        "ingress_default": "allow",
        "egress_default": "deny",
        "spoof_check": True,
        "allowed_pairs": [{"cidr": "10.0.0.0/24"}],
    }
    r = run(server, "vm", "nic", "update", "web1", "0", "--no-spoof-check")
    assert server.sent("PATCH")[-1][1] == {"spoof_check": False}


def test_update_usage_errors(server: Server) -> None:
    r = run(server, "vm", "nic", "update", "web1", "0")
    assert r.exit_code == 2 and "nothing to change" in r.output
    r = run(server, "vm", "nic", "update", "web1", "0", "-g", "a", "--no-security-groups")
    assert r.exit_code == 2
    r = run(server, "vm", "nic", "update", "web1", "0", "--allowed-pair", "x",
            "--no-allowed-pairs")  # fmt: skip
    assert r.exit_code == 2
    r = run(server, "vm", "nic", "update", "web1", "0", "--allowed-pair", "10.0.0.0/24@")
    assert r.exit_code == 2 and "expected CIDR or CIDR@MAC" in r.output
    assert server.requests == []


def test_remove(server: Server) -> None:
    r = run(server, "vm", "nic", "remove", "web1", "1")
    assert (r.exit_code, r.stdout) == (0, "NIC 1 removed from VM web1.\n"), r.output
    assert server.sent("DELETE")[-1] == ("/vms/web1/nics/1", None, {})
    r = run(server, "vm", "nic", "remove", "web1", "1", "--timeout", "5", "--no-wait")
    assert (r.exit_code, r.stdout) == (0, "op-1\n")
    assert server.sent("DELETE")[-1][2] == {"timeout": "5.0"}
    r = run(server, "-o", "json", "vm", "nic", "remove", "web1", "1")
    assert json.loads(r.stdout)["type"] == "vm.nic.x"
