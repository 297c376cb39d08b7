"""Deletion policies and the recycle bin through the SDK and the CLI (one in-process stack,
simulated hosts, real HTTP).

The test stacks start with the ``immediate`` policy (``tests/conftest.py``): every test sets the
policies it needs and the ``admin`` fixture sets them back to ``immediate`` and empties the bin,
so that each test finds only the image ``tiny`` and the pool ``binpool``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InvalidInput, InvalidState, NameTaken, NotFound
from corral.api.recycle import (
    DeletionPolicies,
    DeletionPolicy,
    KindPolicy,
    RecycleItem,
    RecycleKind,
)
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD

POOL = "binpool"
IMAGE = "tiny"
IMMEDIATE = KindPolicy(policy=DeletionPolicy.immediate)
DELAYED = KindPolicy(policy=DeletionPolicy.delayed, retention_hours=24)
ALL_DELAYED = DeletionPolicies(vm=DELAYED, volume=DELAYED, image=DELAYED)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("image") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest.fixture(scope="module")
def world(url: str, qcow2: Path) -> None:
    """A local pool on the stack's cluster and the image ``tiny``."""
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        c.storage_pools.create(
            POOL, type="local", settings={"path": "/var/lib/corral/bin"}, clusters=["default"]
        ).wait()
        c.images.import_file(IMAGE, qcow2).wait()


@pytest.fixture
def admin(url: str, world: None) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c
        c.deletion_policies.set(vm=IMMEDIATE, volume=IMMEDIATE, image=IMMEDIATE).wait()
        for entry in c.recycle_bin.list():
            c.recycle_bin.expunge(entry.id).wait(timeout=60)
        for vm in c.vms.iter():
            c.vms.delete(vm.id).wait(timeout=60)
        for vol in c.volumes.iter():
            c.volumes.delete(vol.id).wait(timeout=60)
        for img in c.images.iter():
            if img.name != IMAGE:
                c.images.delete(img.id).wait(timeout=60)


@pytest.fixture
def delayed(admin: Client) -> Client:
    """The admin client, with every kind's policy ``delayed`` (24 h)."""
    admin.deletion_policies.set(ALL_DELAYED).wait()
    return admin


def vm(c: Client, name: str) -> str:
    """A stopped VM's id."""
    c.vms.create(name, image=IMAGE, cpus=1, memory_mb=64, disk_gb=1, start=False).wait(timeout=60)
    return c.vms.get(name).id


def entry(c: Client, name: str, kind: RecycleKind | None = None) -> RecycleItem:
    """The bin entry of the resource once named ``name``."""
    (item,) = [e for e in c.recycle_bin.list(kind=kind) if e.name == name]
    return item


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


def test_sdk_deletion_policies(admin: Client) -> None:
    assert admin.deletion_policies.get() == DeletionPolicies(
        vm=IMMEDIATE, volume=IMMEDIATE, image=IMMEDIATE
    )
    op = admin.deletion_policies.set(ALL_DELAYED)
    assert (op.type, op.status) == ("deletion_policy.update", "succeeded")
    assert admin.deletion_policies.get() == ALL_DELAYED

    # one kind by keyword (a mapping or a KindPolicy): the others are kept
    admin.deletion_policies.set(vm={"policy": "never"}).wait()
    admin.deletion_policies.set(image=KindPolicy(policy=DeletionPolicy.delayed, retention_hours=2))
    got = admin.deletion_policies.get()
    assert (got.vm.policy, got.volume, got.image.retention_hours) == ("never", DELAYED, 2)
    # keywords replace those kinds of the policies given
    admin.deletion_policies.set(ALL_DELAYED, volume={"policy": "immediate"}).wait()
    got = admin.deletion_policies.get()
    assert (got.vm, got.volume.policy, got.image) == (DELAYED, "immediate", DELAYED)

    with pytest.raises(InvalidInput):  # nothing to set
        admin.deletion_policies.set()
    with pytest.raises(InvalidInput):  # checked on the client side
        admin.deletion_policies.set(vm={"policy": "sometimes"})
    with pytest.raises(InvalidInput):
        admin.deletion_policies.set(vm={"policy": "delayed", "retention_hours": 0})
    assert admin.deletion_policies.get().vm == DELAYED


def test_sdk_delete_list_and_restore_a_vm(delayed: Client) -> None:
    c = delayed
    vm_id = vm(c, "web")
    op = c.vms.delete("web")
    assert (op.type, op.target_id) == ("vm.recycle", vm_id)
    op.wait(timeout=60)
    with pytest.raises(NotFound):
        c.vms.get("web")
    with pytest.raises(NotFound):
        c.vms.get(vm_id)
    item = entry(c, "web", "vm")
    assert (item.kind, item.resource_id, item.deleted_by) == ("vm", vm_id, c.users.me().id)
    assert item.expunge_at is not None
    assert item.expunge_at - item.deleted_at == timedelta(hours=24)
    assert c.recycle_bin.list(kind="volume") == []

    # the name is free meanwhile: the restore needs another one then
    other = vm(c, "web")
    with pytest.raises(NameTaken):
        c.recycle_bin.restore(item.id)
    with pytest.raises(InvalidInput):  # a bad name is refused on the client side
        c.recycle_bin.restore(item.id, name="bad name!")
    op = c.recycle_bin.restore(item.id, name="web-old")
    assert (op.type, op.status, op.target_id) == ("vm.restore", "succeeded", vm_id)
    back = c.vms.get("web-old")
    assert (back.id, back.status) == (vm_id, "stopped")
    assert c.vms.get("web").id == other
    assert c.recycle_bin.list() == []
    with pytest.raises(NotFound):  # the entry went with the restore
        c.recycle_bin.restore(item.id)

    # restored under its old name when it is free
    c.vms.delete("web").wait(timeout=60)
    c.recycle_bin.restore(entry(c, "web").id).wait()
    assert c.vms.get("web").id == other


def test_sdk_volumes_and_images_go_to_the_bin(delayed: Client, qcow2: Path) -> None:
    c = delayed
    c.volumes.create("data", size_gb=1, pool=POOL).wait()
    vol_id = c.volumes.get("data").id
    op = c.volumes.delete("data")
    assert (op.type, op.status) == ("volume.recycle", "succeeded")
    with pytest.raises(NotFound):
        c.volumes.get(vol_id)
    item = entry(c, "data", "volume")
    assert [e.id for e in c.recycle_bin.list(kind="vm")] == []
    c.recycle_bin.restore(item.id).wait()
    assert c.volumes.get("data").status == "available"
    c.volumes.delete("data").wait()
    op = c.recycle_bin.expunge(entry(c, "data").id)
    assert op.type == "volume.delete"
    op.wait(timeout=60)
    with pytest.raises(NotFound):
        c.volumes.get(vol_id)
    assert c.recycle_bin.list() == []

    c.images.import_file("gold", qcow2).wait(timeout=60)
    assert c.images.delete("gold").wait().type == "image.recycle"
    with pytest.raises(NotFound):
        c.images.get("gold")
    c.recycle_bin.restore(entry(c, "gold", "image").id).wait()
    assert c.images.get("gold").status == "ready"
    op = c.images.delete("gold", expunge=True)  # skips the bin
    assert (op.type, op.status) == ("image.delete", "succeeded")
    assert c.recycle_bin.list() == []


def test_sdk_expunge_never_and_delete_with_expunge(delayed: Client) -> None:
    c = delayed
    vm_id = vm(c, "gone")
    c.vms.delete("gone").wait(timeout=60)
    item = entry(c, "gone")
    op = c.recycle_bin.expunge(item.id)
    assert (op.type, op.target_id) == ("vm.delete", vm_id)
    assert op.wait(timeout=60).status == "succeeded"
    assert c.vms.count(q=f"id={vm_id}") == 0
    assert c.recycle_bin.list() == []
    with pytest.raises(NotFound):
        c.recycle_bin.expunge(item.id)

    vm_id = vm(c, "now")
    op = c.vms.delete("now", expunge=True)
    assert (op.type, op.target_id) == ("vm.delete", vm_id)
    op.wait(timeout=60)
    assert c.recycle_bin.list() == [] and c.vms.count(q=f"id={vm_id}") == 0
    c.volumes.create("vnow", size_gb=1, pool=POOL).wait()
    assert c.volumes.delete("vnow", expunge=True).wait().type == "volume.delete"
    assert c.recycle_bin.list() == []

    c.deletion_policies.set(vm={"policy": "never"}).wait()
    vm(c, "keep")
    c.vms.delete("keep").wait(timeout=60)
    item = entry(c, "keep")
    assert item.expunge_at is None
    with pytest.raises(InvalidState, match="never"):
        c.recycle_bin.expunge(item.id)
    c.deletion_policies.set(vm=DELAYED).wait()  # now it may go (by hand: no expunge_at)
    assert entry(c, "keep").expunge_at is None
    c.recycle_bin.expunge(item.id).wait(timeout=60)
    assert c.recycle_bin.list() == []


def test_cli_recycle_list_restore_expunge(delayed: Client, cli: None, qcow2: Path) -> None:
    c = delayed
    r = corral("recycle", "list")
    assert (r.exit_code, r.stdout) == (0, "The recycle bin is empty.\n"), r.output
    web = vm(c, "web")
    vm(c, "db")
    r = corral("vm", "delete", "web")
    assert r.exit_code == 0, r.output
    assert r.stdout == (
        "VM web deleted: in the recycle bin until expunged (corral recycle list).\n"
    )
    c.vms.delete("db").wait(timeout=60)
    c.volumes.create("data", size_gb=1, pool=POOL).wait()
    r = corral("volume", "delete", "data")
    assert r.exit_code == 0 and r.stdout.startswith("Volume data deleted: in the recycle bin")

    r = corral("recycle", "list")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == ["ID", "KIND", "NAME", "DELETED", "EXPUNGED", "AT"]
    by_name = {row[2]: row for row in table[1:]}
    assert set(by_name) == {"web", "db", "data"}
    web_entry = entry(c, "web")
    assert by_name["web"][:2] == [web_entry.id, "vm"] and by_name["data"][1] == "volume"
    r = corral("recycle", "list", "--kind", "vm", "-o", "json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)
    assert {e["name"] for e in listed} == {"web", "db"}
    assert {e["resource_id"] for e in listed if e["name"] == "web"} == {web}
    assert corral("recycle", "list", "--kind", "disk").exit_code == 2

    vm(c, "web")  # takes the name
    r = corral("recycle", "restore", web_entry.id)
    assert r.exit_code == 1 and "name_taken" in r.output, r.output
    r = corral("recycle", "restore", web_entry.id, "--name", "web-old")
    assert (r.exit_code, r.stdout) == (0, f"VM web-old restored ({web}): stopped.\n"), r.output
    assert c.vms.get("web-old").id == web
    r = corral("recycle", "restore", entry(c, "data").id, "--no-wait")
    assert r.exit_code == 0, r.output
    assert c.operations.wait(r.stdout.strip(), timeout=60).type == "volume.restore"
    assert c.volumes.get("data").status == "available"

    r = corral("recycle", "expunge", entry(c, "db").id)
    assert (r.exit_code, r.stdout) == (0, "VM db expunged: deleted for good.\n"), r.output
    assert c.recycle_bin.list() == []
    r = corral("recycle", "expunge", "no-such-entry")
    assert r.exit_code == 1 and "not_found" in r.output, r.output

    # --expunge skips the bin whatever the policy
    for args in (("vm", "delete", "web-old"), ("volume", "delete", "data")):
        r = corral(*args, "--expunge")
        assert r.exit_code == 0, r.output
        assert r.stdout.endswith(" deleted.\n") and "recycle" not in r.stdout
    c.images.import_file("gold", qcow2).wait(timeout=60)
    r = corral("image", "delete", "gold", "--expunge")
    assert (r.exit_code, r.stdout) == (0, "Image gold deleted.\n"), r.output
    assert c.recycle_bin.list() == []
    with pytest.raises(NotFound):
        c.vms.get(web)


def test_cli_deletion_policy_show_and_set(admin: Client, cli: None) -> None:
    r = corral("deletion-policy", "show")
    assert r.exit_code == 0, r.output
    assert rows(r.stdout) == [
        ["KIND", "POLICY", "RETENTION"],
        ["vm", "immediate", "-"],
        ["volume", "immediate", "-"],
        ["image", "immediate", "-"],
    ]

    r = corral("deletion-policy", "set", "vm", "delayed", "--retention-hours", "48")
    assert (r.exit_code, r.stdout) == (0, "Deleted VMs stay 48 h in the recycle bin.\n"), r.output
    r = corral("deletion-policy", "set", "volume", "never")
    assert r.exit_code == 0, r.output
    assert r.stdout == "Deleted volumes stay in the recycle bin until the policy changes.\n"
    got = admin.deletion_policies.get()
    assert (got.vm.policy, got.vm.retention_hours) == ("delayed", 48)
    assert (got.volume.policy, got.image) == ("never", IMMEDIATE)
    # the retention is kept when not given
    assert corral("deletion-policy", "set", "vm", "never").exit_code == 0
    assert corral("deletion-policy", "set", "VM", "Delayed").exit_code == 0
    assert admin.deletion_policies.get().vm == KindPolicy(
        policy=DeletionPolicy.delayed, retention_hours=48
    )

    r = corral("deletion-policy", "show", "-o", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["volume"] == {"policy": "never", "retention_hours": 24.0}
    r = corral("deletion-policy", "show")
    assert rows(r.stdout)[1:] == [
        ["vm", "delayed", "48", "h"],
        ["volume", "never", "-"],
        ["image", "immediate", "-"],
    ]

    r = corral("deletion-policy", "set", "image", "immediate", "--no-wait")
    assert r.exit_code == 0, r.output
    assert admin.operations.wait(r.stdout.strip()).type == "deletion_policy.update"
    for bad in (
        ("vm", "sometimes"),
        ("disk", "never"),
        ("vm", "delayed", "--retention-hours", "0"),
        ("vm", "delayed", "--retention-hours", "1000000"),  # over ten years
    ):
        r = corral("deletion-policy", "set", *bad)
        assert r.exit_code == 2, (bad, r.output)
    assert admin.deletion_policies.get().vm.retention_hours == 48
