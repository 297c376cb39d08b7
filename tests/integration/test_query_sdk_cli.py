"""The Query API and tags through the SDK and the CLI (one in-process stack, real HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InvalidQuery
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import Client
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


def test_sdk_queries_and_tags(admin: Client) -> None:
    for name, cpus, mem in (("tiny", 1, 256), ("small", 1, 1024), ("big", 4, 4096)):
        admin.offerings.create(name, cpus=cpus, memory_mb=mem, disk_gb=1).wait()
    page = admin.offerings.list(q="memory>=1024", sort="-memory")
    assert [o.name for o in page.items] == ["big", "small"] and page.total == 2
    assert admin.offerings.count(q="cpus=1") == 2
    assert [o.name for o in admin.offerings.iter(q="name~*i*", sort="name")] == ["big", "tiny"]
    rows = admin.offerings.select(["name", "cpus"], q="cpus>1")
    assert rows == [{"name": "big", "cpus": 4}]
    with pytest.raises(InvalidQuery) as bad:
        admin.offerings.list(q="colour=red")
    assert bad.value.context["field"] == "colour" and "cpus" in bad.value.context["allowed"]

    op = admin.offerings.tag("big", "gpu", "tier=gold")
    assert op.status == "succeeded" and op.type == "offering.tag"
    assert admin.offerings.get("big").tags == ["gpu", "tier=gold"]
    assert [o.name for o in admin.offerings.list(tag="gpu").items] == ["big"]
    assert admin.offerings.count(tag=["gpu", "tier=gold"]) == 1
    admin.offerings.untag("big", "gpu")
    assert admin.offerings.get("big").tags == ["tier=gold"]
    assert admin.offerings.count(tag="gpu") == 0


def test_cli_queries_and_tags(admin: Client, cli: None) -> None:
    admin.zones.create("zq1").wait()
    admin.zones.create("zq2").wait()
    r = corral("zone", "tag", "zq1", "dc=east", "prod")
    assert r.exit_code == 0, r.output
    assert "Tagged zq1" in r.stdout
    r = corral("-o", "json", "zone", "list", "--tag", "prod")
    assert r.exit_code == 0, r.output
    assert [z["name"] for z in json.loads(r.stdout)["items"]] == ["zq1"]
    r = corral("-o", "json", "zone", "list", "--q", "name~zq*", "--sort", "-name")
    assert [z["name"] for z in json.loads(r.stdout)["items"]] == ["zq2", "zq1"]
    r = corral("zone", "untag", "zq1", "prod")
    assert r.exit_code == 0, r.output
    assert admin.zones.get("zq1").tags == ["dc=east"]
    r = corral("zone", "list", "--q", "nope=1")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error [invalid_query]")
