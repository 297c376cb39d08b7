"""Volume snapshots through the SDK and the CLI (one in-process stack, simulated hosts, real HTTP).

A ``local`` pool is attached to the stack's ``default`` cluster; each test attaches a volume of
its own to the running VM ``snapvm`` (created from an uploaded tiny qcow2), takes snapshots of it
(live: the VM runs), reverts (VM stopped) and deletes them (merging into their children) on the
simulated agent.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import Forbidden, InvalidInput, InvalidState, NameTaken, NotFound
from corral.api.snapshots import SnapshotStatus
from corral.api.volumes import VolumeStatus
from corral.cli.app import app
from corral.cli.common import CliState
from corral.cli.output import human_bytes
from corral.sdk import Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD

POOL = "snaps"
VM = "snapvm"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def world(url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A local pool on the stack's cluster, an image and the VM ``snapvm``."""
    image = tmp_path_factory.mktemp("image") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        c.storage_pools.create(
            POOL, type="local", settings={"path": "/var/lib/corral/snaps"}, clusters=["default"]
        ).wait()
        c.images.import_file("tiny", image).wait()
        c.vms.create(VM, image="tiny", cpus=1, memory_mb=64, disk_gb=1).wait()


@pytest.fixture
def admin(url: str, world: None) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c
        # every test leaves the VM running and none of its volumes behind
        if c.vms.get(VM).power_state != "running":
            c.vms.start(VM).wait(timeout=60)
        for vol in c.volumes.attached_to(VM).iter():
            c.volumes.detach(vol.id).wait(timeout=60)
        for vol in c.volumes.iter(q=f"pool.name={POOL}"):
            c.volumes.delete(vol.id).wait(timeout=60)


def volume(c: Client, name: str) -> str:
    """A 1 GiB volume attached to the VM (so created on the pool); its id."""
    c.volumes.create(name, size_gb=1, pool=POOL, vm=VM).wait(timeout=60)
    return c.volumes.get(name).id


def tree(c: Client, vol: str) -> dict[str, tuple[str | None, bool]]:
    """name -> (parent name, current) of the volume's snapshots."""
    nodes = list(c.snapshots.tree_of(vol).iter())
    names = {s.id: s.name for s in nodes}
    return {s.name: (names.get(s.parent_id or ""), s.current) for s in nodes}


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


def test_sdk_snapshot_tree_revert_and_merge(admin: Client) -> None:
    vol_id = volume(admin, "sdk-snap")
    project = admin.volumes.get(vol_id).project_id
    assert project is not None
    quota0 = admin.quotas.get(project).snapshots.used

    op = admin.snapshots.create("sdk-snap", "s1", description="first")
    assert op.type == "snapshot.create"
    op.wait(timeout=60)
    s1 = admin.snapshots.get(op.target_id or "s1")
    assert (s1.name, s1.volume_id, s1.parent_id, s1.current) == ("s1", vol_id, None, True)
    assert (s1.status, s1.size_gb, s1.description) == (SnapshotStatus.ready, 1, "first")
    admin.snapshots.create(vol_id, "s2", quiesce=False).wait(timeout=60)
    assert tree(admin, vol_id) == {"s1": (None, False), "s2": ("s1", True)}
    assert admin.quotas.get(project).snapshots.used == quota0 + 2
    assert admin.volumes.get(vol_id).status == VolumeStatus.in_use

    page = admin.snapshots.tree("sdk-snap", sort="created_at")
    assert [s.name for s in page.items] == ["s1", "s2"] and page.total == 2
    assert admin.snapshots.count(q="volume.name=sdk-snap,status=ready") == 2
    assert admin.snapshots.select(["name", "parent_id"], q="volume_id=" + vol_id, sort="name") == [
        {"name": "s1", "parent_id": None},
        {"name": "s2", "parent_id": s1.id},
    ]
    with pytest.raises(NameTaken):
        admin.snapshots.create(vol_id, "s1")
    with pytest.raises(InvalidInput):  # refused on the client side
        admin.snapshots.create(vol_id, "bad name")

    admin.snapshots.update("s2", name="s2b", description="second").wait()
    s2 = admin.snapshots.get("s2b")
    assert (s2.description, s2.current) == ("second", True)
    admin.snapshots.tag(s2.id, "keep").wait()
    assert [s.id for s in admin.snapshots.list(tag="keep").items] == [s2.id]
    admin.snapshots.untag(s2.id, "keep").wait()

    with pytest.raises(InvalidState):  # the VM runs
        admin.snapshots.revert("s1")
    admin.vms.stop(VM, force=True).wait(timeout=60)
    admin.snapshots.revert("s1").wait(timeout=60)
    assert tree(admin, vol_id) == {"s1": (None, True), "s2b": ("s1", False)}
    admin.snapshots.create(vol_id, "s3").wait(timeout=60)  # a new branch from s1, offline
    assert tree(admin, vol_id) == {"s1": (None, False), "s2b": ("s1", False), "s3": ("s1", True)}
    admin.vms.start(VM).wait(timeout=60)

    deleted = admin.snapshots.delete("s1").wait(timeout=60)  # merged into both branches, live
    assert deleted.type == "snapshot.delete" and deleted.status == "succeeded"
    assert tree(admin, vol_id) == {"s2b": (None, False), "s3": (None, True)}
    with pytest.raises(NotFound):
        admin.snapshots.get(s1.id)
    admin.snapshots.delete("s3").wait(timeout=60)  # the current node: current moves up
    assert tree(admin, vol_id) == {"s2b": (None, False)}
    assert admin.quotas.get(project).snapshots.used == quota0 + 1


def test_sdk_chain_limit(admin: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    vol_id = volume(admin, "sdk-chain")
    blank = admin.volumes.create("sdk-blank", size_gb=1, pool=POOL)
    blank.wait()
    with pytest.raises(InvalidState, match="no data yet"):
        admin.snapshots.create("sdk-blank", "x")
    monkeypatch.setattr("corral.server.services.snapshots.MAX_CHAIN", 1)
    admin.snapshots.create(vol_id, "only").wait(timeout=60)
    with pytest.raises(InvalidState) as caught:
        admin.snapshots.create(vol_id, "more")
    assert caught.value.context["reason"] == "chain_full"
    admin.snapshots.delete("only").wait(timeout=60)
    admin.snapshots.create(vol_id, "more").wait(timeout=60)
    assert tree(admin, vol_id) == {"more": (None, True)}


def test_cli_snapshots(admin: Client, cli: None) -> None:
    vol_id = volume(admin, "cli-snap")
    r = corral("snapshot", "create", "cli-snap", "c1", "--description", "base")
    assert r.exit_code == 0, r.output
    c1 = admin.snapshots.get("c1")
    assert r.stdout == f"Snapshot c1 of volume cli-snap created ({c1.id}).\n"
    r = corral("snapshot", "create", "cli-snap", "c2", "--no-wait")
    assert r.exit_code == 0, r.output
    assert admin.operations.wait(r.stdout.strip(), timeout=60).status == "succeeded"
    c2 = admin.snapshots.get("c2")

    r = corral("snapshot", "list", "--volume", "cli-snap", "--sort", "created_at")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == [*("NAME", "ID", "VOLUME", "STATUS", "CURRENT", "USED", "PARENT", "CREATED")]
    assert c1.used_bytes is not None and c2.used_bytes is not None  # measured when taken
    assert [row[:8] for row in table[1:]] == [
        ["c1", c1.id, "cli-snap", "ready", "no", *human_bytes(c1.used_bytes).split(), "-"],
        ["c2", c2.id, "cli-snap", "ready", "yes", *human_bytes(c2.used_bytes).split(), "c1"],
    ]
    r = corral("snapshot", "list", "-q", "volume.name=cli-snap,name=c2")
    assert [row[0] for row in rows(r.stdout)[1:]] == ["c2"]

    r = corral("snapshot", "tree", "cli-snap")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    total = admin.volumes.get("cli-snap").snapshots_bytes
    assert total == c1.used_bytes + c2.used_bytes
    assert lines[0] == f"cli-snap  1 GiB  snapshots {human_bytes(total)}"
    assert lines[1].startswith(f"└── c1  1 GiB  {human_bytes(c1.used_bytes)} used  ")
    assert lines[1].endswith("  base")
    assert lines[2].startswith(f"    └── * c2 (current)  1 GiB  {human_bytes(c2.used_bytes)} used")
    assert len(lines) == 3
    detail = corral("volume", "show", "cli-snap").stdout.splitlines()
    shown = dict(line.split(None, 1) for line in detail if " " in line.strip())
    assert shown["snapshots_bytes"].strip() == f"{human_bytes(total)} ({total} bytes)"

    r = corral("snapshot", "revert", "c1")
    assert r.exit_code == 1 and "stop the VM" in r.output
    assert corral("vm", "stop", VM, "--force").exit_code == 0
    r = corral("snapshot", "revert", "c1")
    assert r.exit_code == 0, r.output
    assert r.stdout == "Reverted to snapshot c1: the volume goes on from it.\n"
    lines = corral("snapshot", "tree", "cli-snap").stdout.splitlines()
    assert lines[1].startswith("└── * c1 (current)  ")
    assert lines[2].startswith("    └── c2  ")

    r = corral("snapshot", "update", "c2", "--name", "c2b", "-d", "old branch")
    assert (r.exit_code, r.stdout) == (0, "Snapshot c2b updated.\n"), r.output
    r = corral("-o", "json", "snapshot", "show", "c2b")
    assert json.loads(r.stdout)["description"] == "old branch"
    shown = json.loads(corral("-o", "json", "snapshot", "tree", vol_id).stdout)
    assert {s["name"]: s["current"] for s in shown} == {"c1": True, "c2b": False}

    r = corral("snapshot", "delete", "c1")
    assert (r.exit_code, r.stdout) == (0, "Snapshot c1 deleted.\n"), r.output
    assert tree(admin, vol_id) == {"c2b": (None, False)}
    lines = corral("snapshot", "tree", "cli-snap").stdout.splitlines()
    assert lines[0].startswith("cli-snap  1 GiB  snapshots ")  # c2b, now holding c1's data
    assert lines[0].endswith("  (its content descends from no snapshot)")
    r = corral("snapshot", "delete", "c2b", "--no-wait")
    assert admin.operations.wait(r.stdout.strip(), timeout=60).status == "succeeded"
    r = corral("snapshot", "tree", "cli-snap")
    assert (r.exit_code, r.stdout) == (0, "Volume cli-snap has no snapshots.\n")


def test_a_member_snapshots_and_a_viewer_reads(admin: Client, url: str) -> None:
    password = "Snapshot-Tester-2026"
    admin.projects.create("steam").wait()
    for user, role in (("smember", "member"), ("sviewer", "viewer")):
        admin.users.create(user, password=password).wait()
        admin.members.add("steam", user, role).wait()
    with Client.login(url, "smember", password) as member:
        member.vms.create("steam-vm", image="tiny", cpus=1, memory_mb=64, disk_gb=1).wait(60)
        member.volumes.create("team-vol", size_gb=1, pool=POOL, vm="steam-vm").wait(timeout=60)
        member.snapshots.create("team-vol", "t1").wait(timeout=60)
        t1 = member.snapshots.get("t1")
        assert t1.project_id == admin.projects.get("steam").id and t1.current
        member.snapshots.update(t1.id, description="mine").wait()
        with Client.login(url, "sviewer", password) as viewer:
            with pytest.raises(NotFound):  # not shared: the viewer does not see it
                viewer.snapshots.get(t1.id)
            assert viewer.snapshots.count() == 0
            with pytest.raises(Forbidden):  # viewers may not take snapshots
                viewer.snapshots.create("team-vol", "v1")
        member.snapshots.delete(t1.id).wait(timeout=60)
        assert member.snapshots.count() == 0
        member.vms.delete("steam-vm").wait(timeout=60)  # its volume stays, detached
        member.volumes.delete("team-vol").wait(timeout=60)
