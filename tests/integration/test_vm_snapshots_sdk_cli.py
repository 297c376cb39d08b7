"""Root volumes and whole-VM snapshots through the SDK and the CLI (one in-process stack,
simulated hosts, real HTTP).

A ``local`` pool is attached to the stack's ``default`` cluster and an uploaded tiny qcow2 is the
image. Each test creates VMs whose root disk is a volume on the pool (``root_pool``), with a
data volume, snapshots them whole (every volume at one moment), lists, reverts and deletes the
snapshots on the simulated agent; a VM with a host-local root disk is refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InvalidInput, InvalidState, NameTaken, NotFound
from corral.api.vm_snapshots import VmSnapshotStatus
from corral.api.volumes import VolumeRole
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD

POOL = "vmsnaps"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def world(url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A local pool on the stack's cluster and the image ``tiny``."""
    image = tmp_path_factory.mktemp("image") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        c.storage_pools.create(
            POOL, type="local", settings={"path": "/var/lib/corral/vmsnaps"}, clusters=["default"]
        ).wait()
        c.images.import_file("tiny", image).wait()


@pytest.fixture
def admin(url: str, world: None) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c
        # every test leaves no VM, no volume and no image but "tiny" behind
        for vm in c.vms.iter():
            for snap in c.vm_snapshots.list(vm.id):
                c.vm_snapshots.delete(vm.id, snap.id).wait(timeout=60)
            c.vms.delete(vm.id, expunge=True).wait(timeout=60)
        for vol in c.volumes.iter():
            c.volumes.delete(vol.id, expunge=True).wait(timeout=60)
        for img in c.images.iter():
            if img.name != "tiny":
                c.images.delete(img.id, expunge=True).wait(timeout=60)


def vm_on_pool(c: Client, name: str, *, start: bool = False) -> tuple[str, str, str]:
    """The VM ``name`` with its root disk and a 1 GiB data volume on the pool; the ids of the
    VM, its root volume and its data volume."""
    c.vms.create(
        name,
        image="tiny",
        cpus=1,
        memory_mb=64,
        disk_gb=1,
        start=start,
        root_pool=POOL,
        volumes=[{"size_gb": 1, "pool": POOL}],
    ).wait(timeout=60)
    vm = c.vms.get(name)
    assert vm.root_volume_id is not None
    return vm.id, vm.root_volume_id, c.volumes.get(f"{name}-data1").id


def current(c: Client, volume_id: str) -> str | None:
    """The VM snapshot the volume's current snapshot node belongs to (``None``: no node is
    current, or it is a node of its own)."""
    nodes = [s for s in c.snapshots.tree_of(volume_id).iter() if s.current]
    return nodes[0].vm_snapshot_id if nodes else None


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


def test_sdk_root_volume_and_vm_snapshots(admin: Client) -> None:
    vm_id, root_id, data_id = vm_on_pool(admin, "sv1")
    root, data = admin.volumes.get(root_id), admin.volumes.get(data_id)
    assert (root.name, root.role, root.size_gb) == ("sv1-root", VolumeRole.root, 1)
    assert [(a.vm_id, a.device) for a in root.attachments] == [(vm_id, "vda")]
    assert (data.role, [a.device for a in data.attachments]) == (VolumeRole.data, ["vdb"])
    roles = {v.name: v.role for v in admin.volumes.iter(q=f"pool.name={POOL}")}
    assert roles == {"sv1-root": VolumeRole.root, "sv1-data1": VolumeRole.data}
    project = admin.vms.get(vm_id).project_id
    assert project is not None
    quota0 = admin.quotas.get(project).snapshots.used

    op = admin.vm_snapshots.create("sv1", "vs1", description="first")
    assert op.type == "vm.snapshot"
    op.wait(timeout=60)
    vs1 = admin.vm_snapshots.get("sv1", op.target_id or "vs1")
    assert (vs1.name, vs1.vm_id, vs1.status, vs1.description) == (
        "vs1",
        vm_id,
        VmSnapshotStatus.ready,
        "first",
    )
    assert (vs1.memory, vs1.quiesced, vs1.error) == (False, False, None)  # the VM is stopped
    assert len(vs1.snapshots) == 2
    members = [admin.snapshots.get(s) for s in vs1.snapshots]
    assert [m.volume_id for m in members] == [root_id, data_id]  # by device order
    assert {m.vm_snapshot_id for m in members} == {vs1.id}
    assert admin.quotas.get(project).snapshots.used == quota0 + 2
    assert admin.vm_snapshots.get(vm_id, vs1.id) == vs1

    admin.vm_snapshots.create(vm_id, "vs2", quiesce=False).wait(timeout=60)
    listed = admin.vm_snapshots.list("sv1")
    assert [s.name for s in listed] == ["vs1", "vs2"]  # oldest first
    vs2 = listed[1]
    assert current(admin, root_id) == current(admin, data_id) == vs2.id
    with pytest.raises(InvalidInput):  # refused on the client side
        admin.vm_snapshots.create("sv1", "bad name")
    with pytest.raises(InvalidInput):  # a stopped VM has no memory to save
        admin.vm_snapshots.create("sv1", "mem", memory=True)
    with pytest.raises(NotFound):
        admin.vm_snapshots.get("sv1", "nope")

    op = admin.vm_snapshots.revert("sv1", "vs1")
    assert op.type == "vm.snapshot.revert"
    op.wait(timeout=60)
    assert current(admin, root_id) == current(admin, data_id) == vs1.id
    assert admin.vm_snapshots.get("sv1", "vs1").status == VmSnapshotStatus.ready

    admin.vms.start("sv1").wait(timeout=60)
    with pytest.raises(InvalidState):  # the VM runs
        admin.vm_snapshots.revert("sv1", "vs2")
    admin.vm_snapshots.create("sv1", "vs3").wait(timeout=60)  # live
    assert [s.name for s in admin.vm_snapshots.list("sv1")] == ["vs1", "vs2", "vs3"]

    op = admin.vm_snapshots.delete("sv1", "vs1")  # merged into its children, live
    assert op.type == "vm.snapshot.delete"
    op.wait(timeout=60)
    assert [s.name for s in admin.vm_snapshots.list("sv1")] == ["vs2", "vs3"]
    with pytest.raises(NotFound):
        admin.vm_snapshots.get("sv1", vs1.id)
    for member in vs1.snapshots:
        with pytest.raises(NotFound):
            admin.snapshots.get(member)
    assert (
        current(admin, root_id)
        == current(admin, data_id)
        == admin.vm_snapshots.get("sv1", "vs3").id
    )
    assert admin.quotas.get(project).snapshots.used == quota0 + 4


def test_sdk_a_taken_name_is_refused(admin: Client) -> None:
    vm_on_pool(admin, "sv3")
    admin.vm_snapshots.create("sv3", "n1").wait(timeout=60)
    with pytest.raises(NameTaken):
        admin.vm_snapshots.create("sv3", "n1")
    assert [s.name for s in admin.vm_snapshots.list("sv3")] == ["n1"]


def test_sdk_memory_snapshot_resumes_on_revert(admin: Client) -> None:
    vm_on_pool(admin, "sv2", start=True)
    admin.vm_snapshots.create("sv2", "m1", memory=True).wait(timeout=60)
    m1 = admin.vm_snapshots.get("sv2", "m1")
    assert m1.memory and m1.status == VmSnapshotStatus.ready
    admin.vms.stop("sv2", force=True).wait(timeout=60)
    admin.vm_snapshots.revert("sv2", "m1").wait(timeout=60)
    assert admin.vms.get("sv2").power_state == "running"  # resumed from its memory state
    admin.vms.stop("sv2", force=True).wait(timeout=60)
    admin.vm_snapshots.delete("sv2", "m1").wait(timeout=60)
    assert admin.vm_snapshots.list("sv2") == []


def test_sdk_clone_to_a_pool_and_host_local_refusal(admin: Client) -> None:
    admin.vms.create("local1", image="tiny", cpus=1, memory_mb=64, disk_gb=1, start=False).wait(
        timeout=60
    )
    assert admin.vms.get("local1").root_volume_id is None
    with pytest.raises(InvalidState) as caught:
        admin.vm_snapshots.create("local1", "x")
    assert caught.value.code == "invalid_state"
    assert caught.value.context["reason"] == "host_local_root"
    assert admin.vm_snapshots.list("local1") == []

    admin.vms.clone("local1", "pooled", start=False, pool=POOL).wait(timeout=120)
    clone = admin.vms.get("pooled")
    assert clone.root_volume_id is not None
    root = admin.volumes.get(clone.root_volume_id)
    assert (root.name, root.role) == ("pooled-root", VolumeRole.root)
    assert admin.storage_pools.get(POOL).id == root.pool_id
    with pytest.raises(InvalidInput):  # only full clones go to a pool
        admin.vms.clone("local1", "linked1", mode="linked", pool=POOL)
    with pytest.raises(InvalidState) as caught:  # a root volume is cloned full only
        admin.vms.clone("pooled", "linked2", mode="linked")
    assert caught.value.context["reason"] == "root_volume"


def test_cli_root_pool_and_vm_snapshots(admin: Client, cli: None) -> None:
    r = corral("vm", "create", "cv1", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--disk", "1", "--root-pool", POOL, "--volume", f"1G@{POOL}", "--no-start")  # fmt: skip
    assert r.exit_code == 0, r.output
    vm = admin.vms.get("cv1")
    host = admin.hosts.get(vm.host_id or "").name
    assert r.stdout == f"VM cv1 created ({vm.id}) on {host}, root volume cv1-root: stopped.\n"
    assert vm.root_volume_id == admin.volumes.get("cv1-root").id

    r = corral("volume", "list", "--pool", POOL, "--sort", "name")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == ["NAME", "ID", "STATUS", "SIZE", "POOL", "ROLE", "VM/DEVICE"]
    assert [(row[0], row[6], row[7]) for row in table[1:]] == [
        ("cv1-data1", "data", "cv1/vdb"),
        ("cv1-root", "root", "cv1/vda"),
    ]

    r = corral("vm", "snapshot", "list", "cv1")
    assert (r.exit_code, r.stdout) == (0, "VM cv1 has no snapshots.\n"), r.output
    r = corral("vm", "snapshot", "create", "cv1", "c1", "--description", "base", "--no-quiesce")
    assert r.exit_code == 0, r.output
    c1 = admin.vm_snapshots.get("cv1", "c1")
    assert r.stdout == f"Snapshot c1 of VM cv1 created ({c1.id}): 2 disk(s).\n"
    assert c1.description == "base" and len(c1.snapshots) == 2
    r = corral("vm", "snapshot", "create", "cv1", "c2", "--no-wait")
    assert r.exit_code == 0, r.output
    assert admin.operations.wait(r.stdout.strip(), timeout=60).status == "succeeded"
    c2 = admin.vm_snapshots.get("cv1", "c2")

    r = corral("vm", "snapshot", "list", "cv1")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == [
        "NAME", "ID", "STATUS", "MEMORY", "QUIESCED", "DISKS", "CREATED", "DESCRIPTION"
    ]  # fmt: skip
    assert [row[:6] for row in table[1:]] == [
        ["c1", c1.id, "ready", "no", "no", "2"],
        ["c2", c2.id, "ready", "no", "no", "2"],
    ]
    assert table[1][-1] == "base" and table[2][-1] == "-"
    shown = json.loads(corral("-o", "json", "vm", "snapshot", "list", "cv1").stdout)
    assert [(s["name"], s["snapshots"]) for s in shown] == [
        ("c1", c1.snapshots),
        ("c2", c2.snapshots),
    ]
    r = corral("-o", "json", "vm", "snapshot", "show", "cv1", "c1")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["id"] == c1.id
    r = corral("vm", "snapshot", "show", "cv1", c2.id)
    assert r.exit_code == 0 and "ready" in r.stdout, r.output

    r = corral("vm", "snapshot", "revert", "cv1", "c1")
    assert (r.exit_code, r.stdout) == (0, "VM cv1 reverted to snapshot c1.\n"), r.output
    root_nodes = {s.id: s for s in admin.snapshots.tree_of("cv1-root").iter()}
    assert root_nodes[c1.snapshots[0]].current

    r = corral("vm", "snapshot", "delete", "cv1", "c1")
    assert (r.exit_code, r.stdout) == (0, "Snapshot c1 of VM cv1 deleted.\n"), r.output
    r = corral("vm", "snapshot", "delete", "cv1", "c2", "--no-wait")
    assert admin.operations.wait(r.stdout.strip(), timeout=60).status == "succeeded"
    r = corral("vm", "snapshot", "list", "cv1")
    assert (r.exit_code, r.stdout) == (0, "VM cv1 has no snapshots.\n"), r.output
    r = corral("vm", "snapshot", "show", "cv1", "c1")
    assert r.exit_code == 1 and "Error [not_found]" in r.output

    r = corral("vm", "clone", "cv1", "cv2", "--pool", POOL, "--no-start")
    assert r.exit_code == 0, r.output
    clone = admin.vms.get("cv2")
    assert clone.root_volume_id == admin.volumes.get("cv2-root").id
    assert admin.volumes.get("cv2-root").role == VolumeRole.root


def test_cli_refuses_a_host_local_root_disk(admin: Client, cli: None) -> None:
    r = corral("vm", "create", "cl1", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--disk", "1", "--no-start")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "root volume" not in r.stdout
    r = corral("vm", "snapshot", "create", "cl1", "x")
    assert r.exit_code == 1
    assert "Error [invalid_state]" in r.stderr
    assert "  reason: host_local_root\n" in r.stderr
    assert admin.vm_snapshots.list("cl1") == []
    r = corral("vm", "snapshot", "create", "cl1", "y", "--memory")  # refused before the memory
    assert r.exit_code == 1 and "host_local_root" in r.stderr
