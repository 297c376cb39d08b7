"""Images captured from disks and full VM clones through the SDK and the CLI (one in-process
stack, simulated hosts, real HTTP).

A ``local`` pool is attached to the stack's ``default`` cluster; the stopped VM ``clonesrc``
(created from an uploaded tiny qcow2) is the source of the captures and clones. The simulator's
agent sends the disks' bytes as they are (raw), not a flattened qcow2: the images' formats are
not checked here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import InvalidInput, InvalidState
from corral.api.images import ImageStatus
from corral.api.vms import MAX_CLONES
from corral.cli import vm as vm_cli
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD

POOL = "clonepool"
VM = "clonesrc"
KEEP_IMAGES = {"tiny"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def world(url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A local pool on the stack's cluster, an image and the stopped VM ``clonesrc``."""
    image = tmp_path_factory.mktemp("image") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        c.storage_pools.create(
            POOL, type="local", settings={"path": "/var/lib/corral/clones"}, clusters=["default"]
        ).wait()
        c.images.import_file("tiny", image).wait()
        c.vms.create(VM, image="tiny", cpus=1, memory_mb=64, disk_gb=1, start=False).wait()


@pytest.fixture
def admin(url: str, world: None) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c
        # every test leaves only the stopped source VM, no volume and no image but "tiny"
        for vm in c.vms.iter():
            if vm.name != VM:
                c.vms.delete(vm.id).wait(timeout=60)
        if c.vms.get(VM).power_state != "stopped":
            c.vms.stop(VM, force=True).wait(timeout=60)
        for vol in c.volumes.attached_to(VM).iter():
            c.volumes.detach(vol.id).wait(timeout=60)
        for vol in c.volumes.iter(q=f"pool.name={POOL}"):
            c.volumes.delete(vol.id).wait(timeout=60)
        images = {img.id: img for img in c.images.iter()}

        def depth(image_id: str | None) -> int:  # linked-clone layers go before their parents
            parent = images[image_id].parent_id if image_id in images else None
            return 0 if parent is None else 1 + depth(parent)

        for img in sorted(images.values(), key=lambda i: -depth(i.id)):
            if img.name not in KEEP_IMAGES:
                c.images.delete(img.id).wait(timeout=60)


def volume(c: Client, name: str) -> str:
    """A 1 GiB volume attached to the VM (so created on the pool); its id."""
    c.volumes.create(name, size_gb=1, pool=POOL, vm=VM).wait(timeout=60)
    return c.volumes.get(name).id


def corral(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), obj=CliState())


@pytest.fixture
def cli(admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CORRAL_URL", url)
    monkeypatch.setenv("CORRAL_TOKEN", str(admin.token))
    monkeypatch.setenv("COLUMNS", "200")


def test_sdk_capture_from_a_vm_a_volume_and_a_snapshot(admin: Client) -> None:
    src = admin.vms.get(VM)
    op = admin.images.capture("from-vm", vm=VM)
    assert (op.type, op.target_type) == ("image.capture", "image")
    op.wait(timeout=60)
    img = admin.images.get(op.target_id or "from-vm")
    assert (img.name, img.status, img.source_type, img.source_id) == (
        "from-vm",
        ImageStatus.ready,
        "vm",
        src.id,
    )
    assert img.size_bytes > 0 and img.sha256

    vol_id = volume(admin, "cap-vol")  # attached to the stopped VM
    admin.images.capture("from-vol", volume="cap-vol").wait(timeout=60)
    img = admin.images.get("from-vol")
    assert (img.status, img.source_type, img.source_id) == (ImageStatus.ready, "volume", vol_id)
    assert admin.volumes.get(vol_id).status == "in_use"  # given back after the capture

    # while the VM runs: a snapshot can be captured, the VM too (copied live), not the volume
    admin.vms.start(VM).wait(timeout=60)
    admin.snapshots.create(vol_id, "cap-snap").wait(timeout=60)
    snap = admin.snapshots.get("cap-snap")
    admin.images.capture("from-snap", snapshot=snap.id).wait(timeout=60)
    img = admin.images.get("from-snap")
    assert (img.status, img.source_type, img.source_id) == (ImageStatus.ready, "snapshot", snap.id)
    admin.images.capture("from-live-vm", vm=VM).wait(timeout=60)
    assert admin.images.get("from-live-vm").source_type == "vm"
    with pytest.raises(InvalidState, match="which runs"):
        admin.images.capture("nope", volume="cap-vol")
    assert {i.source_type for i in admin.images.list(q="name~from-*").items} == {
        "vm",
        "volume",
        "snapshot",
    }

    with pytest.raises(InvalidInput, match="exactly one of vm, volume or snapshot"):
        admin.images.capture("nope")  # refused on the client side
    with pytest.raises(InvalidInput, match="exactly one of vm, volume or snapshot"):
        admin.images.capture("nope", vm=VM, snapshot=snap.id)
    assert admin.images.count(q="name=nope") == 0


def test_sdk_clone_two_from_one_base(admin: Client) -> None:
    src = admin.vms.get(VM)
    op = admin.vms.clone(VM, "sdkc", count=2)
    assert (op.type, op.target_id) == ("vm.clone", src.id)
    op.wait(timeout=120)
    base = admin.images.get("sdkc-base")
    assert (base.status, base.source_type, base.source_id) == (ImageStatus.ready, "vm", src.id)
    clones = [admin.vms.get(name) for name in ("sdkc-1", "sdkc-2")]
    for vm in clones:
        assert (vm.status, vm.image_id) == ("running", base.id)
        assert (vm.cpus, vm.memory_mb, vm.disk_gb) == (src.cpus, src.memory_mb, src.disk_gb)
    assert len({vm.id for vm in clones} | {src.id}) == 3
    assert admin.vms.count(q="name=sdkc") == 0  # count 2: only the numbered names

    # one clone, stopped, outlives its source
    admin.vms.create("tmpsrc", image="tiny", cpus=1, memory_mb=64, disk_gb=1, start=False).wait(
        timeout=60
    )
    admin.vms.clone("tmpsrc", "solo", start=False).wait(timeout=120)
    admin.vms.delete("tmpsrc").wait(timeout=60)
    solo = admin.vms.get("solo")
    assert solo.status == "stopped" and solo.image_id == admin.images.get("solo-base").id
    admin.vms.start("solo").wait(timeout=60)

    with pytest.raises(InvalidInput):  # refused on the client side
        admin.vms.clone(VM, "x", count=0)
    with pytest.raises(InvalidInput):
        admin.vms.clone(VM, "x", mode="bogus")  # type: ignore[arg-type]
    admin.vms.start(VM).wait(timeout=60)
    with pytest.raises(InvalidState):  # a linked clone freezes the disk: stopped only
        admin.vms.clone(VM, "x", mode="linked")


def test_cli_image_capture(admin: Client, cli: None) -> None:
    r = corral("image", "capture", "cli-img", "--vm", VM)
    assert r.exit_code == 0, r.output
    img = admin.images.get("cli-img")
    assert (img.status, img.source_type, img.source_id) == (
        ImageStatus.ready,
        "vm",
        admin.vms.get(VM).id,
    )
    assert r.stdout.startswith(f"Image cli-img captured from VM {VM} ({img.id}): ")
    assert r.stdout.endswith(".\n") and len(r.stdout.splitlines()) == 1

    volume(admin, "cli-vol")
    r = corral("image", "capture", "cli-vol-img", "--volume", "cli-vol", "--no-wait")
    assert r.exit_code == 0, r.output
    assert admin.operations.wait(r.stdout.strip(), timeout=60).status == "succeeded"
    assert admin.images.get("cli-vol-img").source_type == "volume"


@pytest.mark.parametrize(
    "sources",
    [(), ("--vm", VM, "--volume", "v"), ("--vm", VM, "--snapshot", "s")],
    ids=["none", "vm+volume", "vm+snapshot"],
)
def test_cli_image_capture_needs_exactly_one_source(
    admin: Client, cli: None, sources: tuple[str, ...]
) -> None:
    r = corral("image", "capture", "cli-bad", *sources)
    assert r.exit_code == 2, r.output
    assert "give exactly one of --vm, --volume or --snapshot" in r.output
    assert admin.images.count(q="name=cli-bad") == 0


def test_cli_vm_clone(admin: Client, cli: None) -> None:
    r = corral("vm", "clone", VM, "web", "--count", "2")
    assert r.exit_code == 0, r.output
    base = admin.images.get("web-base")
    lines = r.stdout.splitlines()
    assert lines[0] == f"VM {VM} cloned into 2 VM(s) from image web-base ({base.id}):"
    assert len(lines) == 3
    for line, name in zip(lines[1:], ("web-1", "web-2"), strict=True):
        vm = admin.vms.get(name)
        assert line.startswith(f"  {name}  {vm.id}  running on "), line
        assert vm.image_id == base.id

    r = corral("vm", "clone", VM, "db", "--no-start")
    assert r.exit_code == 0, r.output
    db = admin.vms.get("db")
    assert r.stdout.splitlines()[1:] == [
        f"  db  {db.id}  stopped on {admin.hosts.get(db.host_id or '').name}"
    ]

    r = corral("vm", "clone", VM, "web", "--count", "2")  # the names are taken
    assert r.exit_code == 1 and "name_taken" in r.output, r.output
    r = corral("vm", "clone", VM, "x", "--count", "0")
    assert r.exit_code == 2, r.output
    assert vm_cli.MAX_CLONES == MAX_CLONES
    r = corral("vm", "clone", VM, "x", "--count", str(MAX_CLONES + 1))
    assert r.exit_code == 2, r.output


def test_sdk_and_cli_linked_and_instant_clones(admin: Client, cli: None) -> None:
    admin.vms.create("lsrc", image="tiny", cpus=1, memory_mb=64, disk_gb=1, start=False).wait(
        timeout=60
    )
    src = admin.vms.get("lsrc")
    admin.vms.clone("lsrc", "lk", mode="linked").wait(timeout=120)
    layer = admin.images.get("lk-base")
    assert (layer.host_id, layer.parent_id) == (src.host_id, src.image_id)
    assert admin.vms.get("lk").image_id == layer.id
    assert admin.vms.get("lsrc").image_id == layer.id

    r = corral("vm", "clone", "lsrc", "inst", "--mode", "instant", "--count", "2")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "VM lsrc cloned into 2 VM(s) from image inst-base:"
    for name in ("inst-1", "inst-2"):
        vm = admin.vms.get(name)
        assert (vm.status, vm.image_id, vm.host_id) == ("running", None, src.host_id)
    r = corral("vm", "clone", "lsrc", "x", "--mode", "bogus")
    assert r.exit_code == 2, r.output
