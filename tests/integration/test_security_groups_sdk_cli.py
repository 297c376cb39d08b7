"""Security groups through the SDK and the CLI (one in-process stack, real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InUse, InvalidInput, NameTaken, NotFound
from corral.api.security_groups import RuleExport, RuleSpec
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
        for g in c.security_groups.iter():  # every test starts from no groups
            c.security_groups.import_rules(g.id, []).wait()
        for g in c.security_groups.iter():
            c.security_groups.delete(g.id).wait()


def corral(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), obj=CliState(), input=stdin)


@pytest.fixture
def cli(admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")


def ports(admin: Client, group: str) -> list[int | None]:
    rules = admin.security_groups.get(group).rules
    assert [r.priority for r in rules] == list(range(len(rules)))
    return [r.port_min for r in rules]


def test_sdk_groups_rules_export_import(admin: Client) -> None:
    sg = admin.security_groups
    op = sg.create("web", description="front", rules=[{"direction": "ingress"}]).wait()
    assert op.type == "security_group.create"
    web = sg.get("web")
    assert (web.id, web.rule_count, web.intra_group) == (op.target_id, 1, True)
    with pytest.raises(NameTaken):
        sg.create("web")
    with pytest.raises(InvalidInput) as bad:  # checked on the client side already
        sg.create("x", rules=[{"direction": "ingress"}, {"direction": "in"}])
    assert [e["index"] for e in bad.value.context["rules"]] == [1]
    with pytest.raises(InvalidInput):
        sg.add_rule("web", "ingress", protocol="icmp", port_min=1)

    first = sg.add_rule("web", "ingress", protocol="tcp", port_min=443).wait().target_id
    sg.add_rule("web", "ingress", protocol="tcp", port_min=80, priority=0).wait()
    sg.add_rule("web", "egress", protocol="udp", port_min=53, port_max=54, action="deny").wait()
    assert ports(admin, "web") == [80, None, 443, 53]
    sg.update_rule("web", first, priority=0, description="tls").wait()
    assert ports(admin, "web") == [443, 80, None, 53]
    sg.delete_rule("web", sg.get("web").rules[2].id).wait()
    assert ports(admin, "web") == [443, 80, 53]
    with pytest.raises(NotFound):
        sg.delete_rule("web", "nope")
    sg.update("web", intra_group=False, name="www").wait()
    assert sg.get("www").intra_group is False and sg.count(q="intra_group=false") == 1

    exported = sg.export("www")
    assert isinstance(exported, RuleExport) and exported.group == "www"
    assert [r.port_min for r in exported.rules] == [443, 80, 53]
    sg.create("copy").wait()
    sg.import_rules("copy", exported).wait()  # replace: intra_group copied
    copy = sg.get("copy")
    assert ports(admin, "copy") == [443, 80, 53] and copy.intra_group is False
    more = [RuleSpec(direction="ingress", protocol="tcp", port_min=22, remote_group="www")]
    sg.import_rules("copy", more, mode="append").wait()
    assert ports(admin, "copy") == [443, 80, 53, 22]
    assert sg.get("copy").rules[3].remote_group_id == sg.get("www").id
    with pytest.raises(InUse) as used:
        sg.delete("www")
    assert used.value.context["groups"] == ["copy"]
    with pytest.raises(InvalidInput) as bad:  # server side: all or nothing
        sg.import_rules("copy", [*exported.rules, {"direction": "ingress", "remote_group": "x"}])
    assert [e["index"] for e in bad.value.context["rules"]] == [3]
    assert ports(admin, "copy") == [443, 80, 53, 22]


async def test_async_client(url: str, admin: Client) -> None:
    admin.security_groups.create("a1", rules=[{"direction": "egress"}]).wait()
    async with await AsyncClient.login(url, "admin", ADMIN_PASSWORD) as c:
        op = await c.security_groups.add_rule("a1", "ingress", protocol="icmp", priority=0)
        await op.wait()
        exported = await c.security_groups.export("a1")
    assert [(r.direction, r.protocol) for r in exported.rules] == [
        ("ingress", "icmp"), ("egress", "any")]  # fmt: skip


def test_cli_security_group_commands(admin: Client, cli: None, tmp_path: Path) -> None:
    r = corral("security-group", "create", "app", "-d", "the app tier")
    assert r.exit_code == 0, r.output
    assert "Security group app created" in r.stdout
    assert corral("security-group", "create", "db", "--no-intra-group").exit_code == 0
    assert admin.security_groups.get("db").intra_group is False
    r = corral("security-group", "rule", "add", "db", "ingress", "-p", "tcp", "--port", "3306",
               "--remote-group", "app", "-d", "mysql")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = corral("security-group", "rule", "add", "db", "ingress", "-p", "tcp", "--port",
               "1000-2000", "--remote-cidr", "10.0.0.0/8", "--action", "deny",
               "--priority", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = corral("security-group", "rule", "add", "db", "ingress", "-p", "icmpv6", "--type", "ipv6")
    assert r.exit_code == 0, r.output
    r = corral("security-group", "rule", "add", "db", "ingress", "-p", "icmp", "--port", "1")
    assert r.exit_code == 2 and "ports only go with tcp or udp" in r.output
    r = corral("security-group", "rule", "add", "db", "ingress", "--port", "x-y")
    assert r.exit_code == 2

    r = corral("security-group", "show", "db")
    assert r.exit_code == 0, r.output
    header = "PRIORITY  DIRECTION  TYPE  PROTOCOL  PORTS      REMOTE      ACTION"
    lines = [" ".join(line.split()) for line in r.stdout.splitlines()]
    assert " ".join(header.split()) + " DESCRIPTION ID" in lines
    assert any(line.startswith("0 ingress IPv4 tcp 1000-2000 10.0.0.0/8 deny") for line in lines)
    assert any(line.startswith("1 ingress IPv4 tcp 3306 group:app allow mysql") for line in lines)
    assert any(line.startswith("2 ingress IPv6 icmpv6 - any allow") for line in lines)
    assert "Built-in rule (members may talk to each other): off" in r.stdout
    r = corral("-o", "json", "security-group", "show", "db")
    assert [x["port_min"] for x in json.loads(r.stdout)["rules"]] == [1000, 3306, None]

    # rules by priority (a number) or id
    assert corral("security-group", "rule", "move", "db", "0", "2").exit_code == 0
    assert ports(admin, "db") == [3306, None, 1000]
    rid = admin.security_groups.get("db").rules[0].id
    assert corral("security-group", "rule", "move", "db", rid, "1").exit_code == 0
    assert ports(admin, "db") == [None, 3306, 1000]
    r = corral("security-group", "rule", "update", "db", "2", "--action", "allow")
    assert r.exit_code == 0, r.output
    assert admin.security_groups.get("db").rules[2].action == "allow"
    assert corral("security-group", "rule", "delete", "db", "0").exit_code == 0
    assert ports(admin, "db") == [3306, 1000]
    r = corral("security-group", "rule", "delete", "db", "7")
    assert r.exit_code == 2 and "no priority 7" in r.output

    r = corral("security-group", "list")
    assert r.exit_code == 0, r.output
    assert "INTRA-GROUP" in r.stdout and "app" in r.stdout and "db" in r.stdout

    # export to stdout and to a file; import (replace, append), all or nothing
    r = corral("security-group", "export", "db")
    assert r.exit_code == 0, r.output
    exported = json.loads(r.stdout)
    assert exported["group"] == "db" and [x["port_min"] for x in exported["rules"]] == [3306, 1000]
    path = tmp_path / "db.json"
    assert corral("security-group", "export", "db", "-f", str(path)).exit_code == 0
    assert json.loads(path.read_text()) == exported
    assert corral("security-group", "create", "db2").exit_code == 0
    r = corral("security-group", "import", "db2", str(path))
    assert r.exit_code == 0, r.output
    assert "2 rule(s) imported into db2" in r.stdout
    assert (
        ports(admin, "db2") == [3306, 1000]
        and admin.security_groups.get("db2").intra_group is False
    )
    rules = json.dumps([{"direction": "egress", "protocol": "udp", "port_min": 53}])
    r = corral("security-group", "import", "db2", "-", "--append", stdin=rules)
    assert r.exit_code == 0, r.output
    assert ports(admin, "db2") == [3306, 1000, 53]
    bad = json.dumps([{"direction": "egress"}, {"direction": "x"}, {"direction": "egress"}])
    r = corral("security-group", "import", "db2", "-", stdin=bad)
    assert r.exit_code == 2
    assert "rule 1: direction:" in r.output
    r = corral("security-group", "import", "db2", "-", stdin=json.dumps([{"direction": "egress"},
               {"direction": "ingress", "remote_group": "nope"}]))  # fmt: skip
    assert r.exit_code == 2 and "rule 1: remote group 'nope' not found" in r.output
    assert ports(admin, "db2") == [3306, 1000, 53]
    assert corral("security-group", "import", "db2", str(tmp_path / "none")).exit_code == 2

    r = corral("security-group", "update", "db2", "--name", "db3", "--intra-group")
    assert r.exit_code == 0, r.output
    assert admin.security_groups.get("db3").intra_group is True
    r = corral("security-group", "delete", "app")
    assert r.exit_code == 1 and "in_use" in r.output
    assert corral("security-group", "tag", "db3", "tier=db").exit_code == 0
    assert admin.security_groups.get("db3").tags == ["tier=db"]
