"""Storage pools through the SDK and the CLI (one in-process stack, real HTTP)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InUse, InvalidInput, InvalidState, NotFound
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


def corral(*args: str, stdin: str | None = None, force_terminal: bool | None = None) -> Result:
    state = CliState(force_terminal=force_terminal)
    return CliRunner().invoke(app, list(args), obj=state, input=stdin)


@pytest.fixture
def cli(admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")


def test_sdk_pool_lifecycle(admin: Client) -> None:
    admin.zones.create("zsp").wait()
    admin.clusters.create("csp", zone="zsp").wait()
    with pytest.raises(InvalidInput):  # checked on the client side already
        admin.storage_pools.create("bad", type="local", settings={"path": "rel"})
    op = admin.storage_pools.create(
        "sdk-iscsi",
        type="iscsi",
        settings={"portal": "tgt.lan:3260", "iqn": "iqn.2026-01.lan.tgt:disks"},
        credentials="chapuser:chapsecret",
        clusters=["csp"],
    ).wait()
    pool = admin.storage_pools.get("sdk-iscsi")
    assert pool.id == op.target_id and pool.has_credentials and pool.type == "iscsi"
    assert pool.settings.model_dump() == {
        "portal": "tgt.lan:3260",
        "iqn": "iqn.2026-01.lan.tgt:disks",
    }
    assert "chapsecret" not in pool.model_dump_json()
    cluster_id = admin.clusters.get("csp").id
    assert pool.cluster_ids == [cluster_id]
    with pytest.raises(InvalidState):
        admin.storage_pools.delete("sdk-iscsi")
    admin.storage_pools.detach("sdk-iscsi", "csp").wait()
    assert admin.storage_pools.get("sdk-iscsi").cluster_ids == []
    admin.storage_pools.attach("sdk-iscsi", cluster_id).wait()
    admin.storage_pools.update("sdk-iscsi", state="maintenance", overcommit=1.5).wait()
    assert admin.storage_pools.count(q="state=maintenance,overcommit>1") == 1
    admin.storage_pools.delete("sdk-iscsi").wait()
    assert admin.storage_pools.count(q="name=sdk-iscsi") == 0


def test_cli_pool_commands(admin: Client, cli: None) -> None:
    admin.zones.create("zcli").wait()
    admin.clusters.create("ccli", zone="zcli").wait()
    r = corral("pool", "create", "cli-rbd", "--type", "rbd", "--monitor", "mon1:6789",
               "--monitor", "mon2", "--rbd-pool", "vms", "--cluster", "ccli",
               "--credentials-stdin", stdin="AQBsecretcephxkey==\n")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Storage pool cli-rbd created" in r.stdout
    pool = admin.storage_pools.get("cli-rbd")
    assert pool.has_credentials and pool.settings.model_dump() == {
        "monitors": ["mon1:6789", "mon2"], "pool": "vms", "user": "admin"}  # fmt: skip
    r = corral("pool", "list")
    assert r.exit_code == 0, r.output
    assert "cli-rbd" in r.stdout and "rbd" in r.stdout
    r = corral("-o", "json", "pool", "show", "cli-rbd")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["has_credentials"] is True and "AQBsecret" not in r.stdout
    r = corral("pool", "create", "cli-bad", "--type", "nfs", "--server", "nas")
    assert r.exit_code != 0 and "export" in r.output
    assert admin.storage_pools.count(q="name=cli-bad") == 0
    assert corral("pool", "detach", "cli-rbd", "ccli").exit_code == 0
    assert corral("pool", "attach", "cli-rbd", "ccli").exit_code == 0
    r = corral("pool", "delete", "cli-rbd")
    assert r.exit_code != 0 and "maintenance" in r.output
    r = corral("pool", "update", "cli-rbd", "--state", "maintenance", "--overcommit", "2")
    assert r.exit_code == 0, r.output
    assert admin.storage_pools.get("cli-rbd").overcommit == 2
    r = corral("pool", "delete", "cli-rbd")
    assert r.exit_code == 0, r.output
    assert admin.storage_pools.count() == 0


def test_sdk_and_cli_pool_hosts(admin: Client, cli: None, tmp_path: Path) -> None:
    """The stack's simulated hosts report a pool attached to their cluster."""
    cluster_id = admin.hosts.list().items[0].cluster_id
    hosts = sorted(h.name for h in admin.hosts.iter() if h.cluster_id == cluster_id)
    admin.storage_pools.create(
        "cli-loc", type="local", settings={"path": str(tmp_path / "p")}, clusters=[cluster_id]
    ).wait()
    deadline = time.monotonic() + 20
    while len([r for r in admin.storage_pools.hosts("cli-loc") if r.ok]) < len(hosts):
        assert time.monotonic() < deadline, "the hosts never reported the pool"
        time.sleep(0.1)  # polling interval
    reports = admin.storage_pools.hosts("cli-loc")
    assert [r.host_name for r in reports] == hosts
    assert all(r.ok and r.total_gb > 0 and r.error is None for r in reports)
    pool = admin.storage_pools.get("cli-loc")
    assert pool.hosts.model_dump() == {"ok": len(hosts), "failed": 0}
    assert pool.capacity.total_gb == sum(r.total_gb for r in reports)
    r = corral("pool", "hosts", "cli-loc")
    assert r.exit_code == 0, r.output
    assert all(name in r.stdout for name in hosts) and "yes" in r.stdout
    r = corral("-o", "json", "pool", "hosts", "cli-loc")
    assert r.exit_code == 0, r.output
    assert [h["host_id"] for h in json.loads(r.stdout)] == [x.host_id for x in reports]
    assert "HOSTS OK/FAILED" in corral("pool", "list").stdout
    admin.storage_pools.update("cli-loc", state="maintenance").wait()
    admin.storage_pools.delete("cli-loc").wait()


def test_sdk_pool_delete_cascade(admin: Client, tmp_path: Path) -> None:
    """A pool holding volumes is deleted only with ``cascade``, and its volumes with it (these
    were never attached: records only; the files' side is in test_volumes_sim and
    test_pool_delete_sim)."""
    admin.storage_pools.create("sdk-casc", type="local", settings={"path": str(tmp_path)}).wait()
    pool_id = admin.storage_pools.get("sdk-casc").id
    admin.volumes.create("casc-a", size_gb=1, pool="sdk-casc").wait()
    admin.volumes.create("casc-b", size_gb=2, pool=pool_id).wait()
    project = admin.volumes.get("casc-a").project_id
    assert project is not None
    used = admin.quotas.get(project).volume_gb.used
    with pytest.raises(InUse) as refused:
        admin.storage_pools.delete("sdk-casc")
    assert refused.value.context == {"volumes": 2} and "cascade" in refused.value.message
    assert admin.storage_pools.get(pool_id).capacity.allocated_gb == 3  # nothing changed
    assert admin.volumes.count(q=f"pool_id={pool_id},status=available") == 2
    op = admin.storage_pools.delete("sdk-casc", cascade=True).wait()
    assert (op.type, op.status, op.target_id) == ("storage_pool.delete", "succeeded", pool_id)
    with pytest.raises(NotFound):
        admin.storage_pools.get(pool_id)
    assert admin.volumes.count(q=f"pool_id={pool_id}") == 0
    for name in ("casc-a", "casc-b"):
        with pytest.raises(NotFound):
            admin.volumes.get(name)
    assert admin.quotas.get(project).volume_gb.used == used - 3
    # cascade on an empty pool is a plain delete
    admin.storage_pools.create("sdk-empty", type="local", settings={"path": str(tmp_path)}).wait()
    assert admin.storage_pools.delete("sdk-empty", cascade=True).wait().status == "succeeded"
    assert admin.storage_pools.count(q="name~sdk-*") == 0


def test_cli_pool_delete_cascade(admin: Client, cli: None, tmp_path: Path) -> None:
    settings = {"path": str(tmp_path)}
    admin.storage_pools.create("cli-casc", type="local", settings=settings).wait()
    for name in ("cli-casc-b", "cli-casc-a"):
        admin.volumes.create(name, size_gb=1, pool="cli-casc").wait()
    r = corral("pool", "delete", "cli-casc")
    assert r.exit_code == 1, r.output
    assert "in_use" in r.output and "2 volume(s)" in r.output and "cascade" in r.output
    assert admin.volumes.count(q="pool.name=cli-casc") == 2  # nothing changed
    r = corral("pool", "delete", "cli-casc", "--cascade", force_terminal=True)
    assert r.exit_code == 0, r.output
    assert "storage_pool.delete" in r.stderr  # the (transient) progress bar
    assert r.stdout == (
        "Storage pool cli-casc deleted with its 2 volume(s) and their snapshots: "
        "cli-casc-a, cli-casc-b.\n"
    )
    assert admin.storage_pools.count(q="name=cli-casc") == 0
    assert admin.volumes.count(q="name~cli-casc-*") == 0

    # --no-wait prints the operation; -o json gives the finished operation
    admin.storage_pools.create("cli-casc2", type="local", settings=settings).wait()
    admin.volumes.create("cli-casc2-a", size_gb=1, pool="cli-casc2").wait()
    r = corral("pool", "delete", "cli-casc2", "--cascade", "--no-wait")
    assert r.exit_code == 0, r.output
    op = admin.operations.wait(r.stdout.strip())
    assert (op.type, op.status) == ("storage_pool.delete", "succeeded")
    assert admin.volumes.count(q="name=cli-casc2-a") == 0
    admin.storage_pools.create("cli-empty", type="local", settings=settings).wait()
    r = corral("pool", "delete", "cli-empty", "--cascade")
    assert r.exit_code == 0, r.output
    assert r.stdout == "Storage pool cli-empty deleted (it held no volumes).\n"
    admin.storage_pools.create("cli-empty", type="local", settings=settings).wait()
    r = corral("-o", "json", "pool", "delete", "cli-empty", "--cascade")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert (shown["type"], shown["status"]) == ("storage_pool.delete", "succeeded")
    r = corral("pool", "delete", "no-such-pool", "--cascade")
    assert r.exit_code == 1 and "not_found" in r.output
    assert admin.storage_pools.count(q="name~cli-*") == 0
