"""Data volumes through the SDK and the CLI (one in-process stack, simulated hosts, real HTTP).

The stack's hosts are in the ``default`` cluster; a ``local`` pool is attached to it and a VM is
created from an uploaded tiny qcow2. Record-only calls (create without a VM, rename, limits and
growth of a volume never attached, delete) need no agent; attach, live growth, live limits and
detach run volume tasks on the (simulated) agent.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from corral.api.errors import Forbidden, InUse, InvalidInput, InvalidState, NotFound
from corral.api.volumes import VolumeQos, VolumeStatus
from corral.cli.app import app
from corral.cli.common import CliState
from corral.sdk import Client
from tests.e2e.inprocess import threaded_stack
from tests.support.stack import ADMIN_PASSWORD

POOL = "vols"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def world(url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A zone and cluster of their own, a local pool on the stack's cluster and its clusters, an
    image and two VMs (``vm1``, ``vm2``)."""
    image = tmp_path_factory.mktemp("image") / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        c.zones.create("zvol").wait()
        c.clusters.create("cvol", zone="zvol").wait()
        c.storage_pools.create(
            POOL,
            type="local",
            settings={"path": "/var/lib/corral/volumes"},
            clusters=["default", "cvol"],
        ).wait()
        c.images.import_file("tiny", image).wait()
        for name in ("vm1", "vm2"):
            c.vms.create(name, image="tiny", cpus=1, memory_mb=64, disk_gb=1).wait()


@pytest.fixture
def admin(url: str, world: None) -> Iterator[Client]:
    with Client.login(url, "admin", ADMIN_PASSWORD) as c:
        yield c


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


def test_sdk_records_volumes_without_the_agent(admin: Client) -> None:
    pool = admin.storage_pools.get(POOL)
    op = admin.volumes.create("sdk-data", size_gb=2, pool=POOL, qos={"total_iops_sec": 500})
    assert op.done and op.status == "succeeded" and op.type == "volume.create"
    vol = admin.volumes.get("sdk-data")
    assert vol.id == op.target_id
    assert (vol.status, vol.size_gb, vol.format, vol.pool_id) == (
        VolumeStatus.available,
        2,
        "qcow2",
        pool.id,
    )
    assert not vol.instantiated and vol.host_id is None and vol.attachments == []
    assert vol.qos == VolumeQos(total_iops_sec=500) and not vol.shareable
    assert admin.storage_pools.get(POOL).capacity.allocated_gb >= 2

    with pytest.raises(InvalidInput):  # checked on the client side already
        admin.volumes.create("bad", size_gb=0, pool=POOL)
    with pytest.raises(InvalidInput):
        admin.volumes.update("sdk-data", qos={"total_iops_sec": 1, "read_iops_sec": 1})
    with pytest.raises(NotFound):
        admin.volumes.create("bad", size_gb=1, pool="no-such-pool")

    assert admin.volumes.count(q="size>=2,status=available,name~sdk-*") == 1
    assert [v.name for v in admin.volumes.iter(q=f"pool.name={POOL}") if v.name == "sdk-data"]
    assert admin.volumes.select(["name", "size_gb"], q="name=sdk-data") == [
        {"name": "sdk-data", "size_gb": 2}
    ]

    admin.volumes.update("sdk-data", name="sdk-data2", qos=VolumeQos(write_bytes_sec=10**7)).wait()
    vol = admin.volumes.get("sdk-data2")
    assert vol.qos == VolumeQos(write_bytes_sec=10**7)
    resized = admin.volumes.resize("sdk-data2", 5).wait()  # never attached: a record change
    assert resized.status == "succeeded" and admin.volumes.get(vol.id).size_gb == 5
    with pytest.raises(InvalidInput):  # volumes only grow
        admin.volumes.resize(vol.id, 3)
    with pytest.raises(InvalidState):
        admin.volumes.detach(vol.id)  # not attached

    admin.volumes.tag(vol.id, "env=test").wait()
    assert [v.id for v in admin.volumes.list(tag="env=test").items] == [vol.id]
    admin.volumes.untag(vol.id, "env=test").wait()
    assert admin.volumes.of_vm("vm1").total == 0

    deleted = admin.volumes.delete(vol.id).wait()  # never created on the pool: at once
    assert deleted.status == "succeeded"
    with pytest.raises(NotFound):
        admin.volumes.get(vol.id)


def test_sdk_attach_grow_limit_detach(admin: Client) -> None:
    vm = admin.vms.get("vm1")
    op = admin.volumes.create("sdk-att", size_gb=1, pool=POOL, vm="vm1")
    assert op.type == "volume.attach"
    op.wait(timeout=60)
    vol = admin.volumes.get("sdk-att")
    assert vol.status == VolumeStatus.in_use and vol.instantiated
    assert vol.host_id == vm.host_id  # a local pool: the volume lives on the VM's host
    assert [(a.vm_id, a.device) for a in vol.attachments] == [(vm.id, "vdb")]
    page = admin.volumes.of_vm("vm1")
    assert [v.id for v in page.items] == [vol.id]
    assert admin.volumes.attached_to(vm.id).count() == 1
    with pytest.raises(InUse):
        admin.volumes.delete(vol.id)
    with pytest.raises(InUse):  # not shareable
        admin.volumes.attach(vol.id, "vm2")

    admin.volumes.resize(vol.id, 3).wait(timeout=60)  # live, the VM runs
    admin.volumes.update(vol.id, qos={"read_iops_sec": 200, "write_iops_sec": 100}).wait(60)
    vol = admin.volumes.get(vol.id)
    assert vol.size_gb == 3 and vol.qos == VolumeQos(read_iops_sec=200, write_iops_sec=100)

    admin.volumes.detach(vol.id, vm="vm1", timeout=5).wait(timeout=60)
    vol = admin.volumes.get(vol.id)
    assert vol.status == VolumeStatus.available and vol.attachments == []
    assert vol.instantiated and admin.volumes.of_vm("vm1").total == 0

    admin.volumes.attach(vol.id, "vm1").wait(timeout=60)  # created already: only plugged
    admin.volumes.detach(vol.id).wait(timeout=60)
    admin.volumes.delete(vol.id).wait(timeout=60)
    assert admin.volumes.count(q="name=sdk-att") == 0


def test_cli_volume_records(admin: Client, cli: None) -> None:
    r = corral("volume", "create", "cli-data", "--size", "1536M", "--pool", POOL,
               "--iops", "300", "--bps", "10M", "--shareable")  # fmt: skip
    assert r.exit_code == 0, r.output
    vol = admin.volumes.get("cli-data")
    assert r.stdout == f"Volume cli-data created ({vol.id}).\n"
    assert vol.size_gb == 2 and vol.shareable  # 1.5 GiB rounded up
    assert vol.qos == VolumeQos(total_iops_sec=300, total_bytes_sec=10 * 1024**2)

    r = corral("volume", "list", "--pool", POOL, "--status", "available")
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert table[0] == ["NAME", "ID", "STATUS", "SIZE", "POOL", "ROLE", "VM/DEVICE"]
    assert ["cli-data", vol.id, "available", "2", "GiB", POOL, "data", "-"] in table[1:]

    r = corral("-o", "json", "volume", "show", "cli-data")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["id"] == vol.id and shown["qos"]["total_iops_sec"] == 300
    assert "total_bytes_sec" in corral("volume", "show", "cli-data").stdout

    # IOPS flags replace the IOPS limits and keep the bytes/s ones
    r = corral("volume", "update", "cli-data", "--read-iops", "50", "--name", "cli-data2")
    assert r.exit_code == 0, r.output
    assert admin.volumes.get(vol.id).qos == VolumeQos(
        read_iops_sec=50, total_bytes_sec=10 * 1024**2
    )
    r = corral("volume", "update", "cli-data2", "--iops", "10", "--read-iops", "5")
    assert r.exit_code == 2 and "total_iops_sec excludes" in r.output
    assert corral("volume", "update", "cli-data2").exit_code == 2  # nothing to change
    r = corral("volume", "update", "cli-data2", "--unlimited")
    assert r.exit_code == 0, r.output
    assert admin.volumes.get(vol.id).qos.unlimited

    r = corral("volume", "resize", "cli-data2", "-s", "4G")
    assert (r.exit_code, r.stdout) == (0, "Volume cli-data2 resized to 4 GiB.\n"), r.output
    r = corral("volume", "resize", "cli-data2", "-s", "1")
    assert r.exit_code == 2 and "only grow" in r.output
    assert corral("volume", "tag", "cli-data2", "team:web").exit_code == 0
    assert rows(corral("volume", "list", "--tag", "team:web").stdout)[1][0] == "cli-data2"
    r = corral("volume", "create", "cli-big", "--size", "lots", "--pool", POOL)
    assert r.exit_code == 2 and "not a size" in r.output

    r = corral("volume", "delete", "cli-data2", "--no-wait")
    assert r.exit_code == 0, r.output
    assert admin.operations.wait(r.stdout.strip()).status == "succeeded"
    assert admin.volumes.count(q="name=cli-data2") == 0


def test_cli_volume_attach_detach(admin: Client, cli: None) -> None:
    r = corral("volume", "create", "cli-att", "-s", "1", "-p", POOL, "--vm", "vm2")
    assert r.exit_code == 0, r.output
    vol = admin.volumes.get("cli-att")
    assert r.stdout == f"Volume cli-att created ({vol.id}), attached to vm2 as vdb.\n"

    for args in (("vm", "volumes", "vm2"), ("volume", "list", "--vm", "vm2")):
        r = corral(*args)
        assert r.exit_code == 0, r.output
        assert rows(r.stdout)[1:] == [
            ["cli-att", vol.id, "in_use", "1", "GiB", POOL, "data", "vm2/vdb"]
        ]
    shown = json.loads(corral("-o", "json", "vm", "volumes", "vm2").stdout)
    assert [v["id"] for v in shown["items"]] == [vol.id]

    r = corral("volume", "resize", "cli-att", "--size", "2G")
    assert r.exit_code == 0, r.output
    r = corral("volume", "update", "cli-att", "--write-bps", "1G")
    assert r.exit_code == 0, r.output
    assert admin.volumes.get(vol.id).qos == VolumeQos(write_bytes_sec=1024**3)
    r = corral("volume", "delete", "cli-att")
    assert r.exit_code == 1 and "detach it first" in r.output

    r = corral("volume", "detach", "cli-att", "--timeout", "5")
    assert (r.exit_code, r.stdout) == (0, "Volume cli-att detached.\n"), r.output
    assert rows(corral("vm", "volumes", "vm2").stdout)[1:] == []
    r = corral("volume", "attach", "cli-att", "vm2")
    assert (r.exit_code, r.stdout) == (0, "Volume cli-att attached to vm2 as vdb.\n"), r.output
    assert corral("volume", "detach", "cli-att", "--vm", "vm2").exit_code == 0
    r = corral("volume", "delete", "cli-att")
    assert r.exit_code == 0, r.output
    assert admin.volumes.count(q="name=cli-att") == 0


def test_a_member_uses_volumes_and_a_viewer_reads_them(
    admin: Client, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "Volume-Tester-2026"
    admin.projects.create("vteam").wait()
    for user, role in (("vmember", "member"), ("vviewer", "viewer")):
        admin.users.create(user, password=password).wait()
        admin.members.add("vteam", user, role).wait()
    with Client.login(url, "vmember", password) as member:
        member.volumes.create("team-data", size_gb=1, pool=POOL).wait()  # no pool permission
        vol = member.volumes.get("team-data")
        assert vol.project_id == admin.projects.get("vteam").id
        member.volumes.tag(vol.id, "team").wait()
        member.volumes.update(vol.id, name="team-data2").wait()
        monkeypatch.setenv("CORRAL_CONFIG_DIR", str(tmp_path / "config"))
        monkeypatch.setenv("CORRAL_URL", url)
        monkeypatch.setenv("CORRAL_TOKEN", str(member.token))
        monkeypatch.setenv("COLUMNS", "200")
        r = corral("volume", "list")
        assert r.exit_code == 0, r.output
        pool_id = admin.storage_pools.get(POOL).id  # members may not list pools: ids shown
        assert rows(r.stdout)[1:] == [
            ["team-data2", vol.id, "available", "1", "GiB", pool_id, "data", "-"]
        ]
    with Client.login(url, "vviewer", password) as viewer:
        with pytest.raises(NotFound):  # not shared: the viewer does not see it
            viewer.volumes.get(vol.id)
        assert viewer.volumes.count() == 0
        with pytest.raises(Forbidden):
            viewer.volumes.create("nope", size_gb=1, pool=POOL)
    assert admin.volumes.get(vol.id).tags == ["team"]
    admin.volumes.delete(vol.id).wait()


def test_snapshot_schedule_by_sdk_and_cli(admin: Client, cli: None) -> None:
    admin.volumes.create("sched-data", size_gb=1, pool=POOL).wait()
    admin.volumes.schedule_snapshots("sched-data", every_minutes=30, keep=4).wait()
    got = admin.volumes.get("sched-data").snapshot_schedule
    assert got is not None and (got.every_minutes, got.keep) == (30, 4)
    admin.volumes.unschedule_snapshots("sched-data").wait()
    assert admin.volumes.get("sched-data").snapshot_schedule is None

    r = corral("volume", "schedule", "sched-data", "--every", "60", "--keep", "2")
    assert r.exit_code == 0, r.output
    assert "a snapshot every 60 min, keeping 2" in r.stdout
    got = admin.volumes.get("sched-data").snapshot_schedule
    assert got is not None and (got.every_minutes, got.keep) == (60, 2)
    assert corral("volume", "schedule", "sched-data", "--every", "5").exit_code != 0
    r = corral("volume", "schedule", "sched-data", "--off")
    assert r.exit_code == 0, r.output
    assert admin.volumes.get("sched-data").snapshot_schedule is None
    admin.volumes.delete("sched-data").wait()


def test_vm_created_with_volumes_by_sdk_and_cli(admin: Client, cli: None) -> None:
    deadline = time.monotonic() + 10
    while admin.storage_pools.get(POOL).hosts.ok < 1:  # the pool sync is asynchronous
        assert time.monotonic() < deadline, "the pool never reached a host"
        time.sleep(0.05)
    admin.vms.create(
        "sdk-vols", image="tiny", cpus=1, memory_mb=64, disk_gb=1,
        volumes=[{"size_gb": 1, "pool": POOL}],
    ).wait()  # fmt: skip
    (vol,) = admin.volumes.of_vm("sdk-vols").items
    assert (vol.name, vol.status, vol.attachments[0].device) == ("sdk-vols-data1", "in_use", "vdb")

    r = corral("vm", "create", "cli-vols", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--disk", "1", "--volume", "2G@" + POOL, "--volume", f"1G@{POOL}:cli-logs")  # fmt: skip
    assert r.exit_code == 0, r.output
    got = {v.name: v for v in admin.volumes.of_vm("cli-vols").items}
    assert {n: (v.size_gb, v.attachments[0].device) for n, v in got.items()} == {
        "cli-vols-data1": (2, "vdb"),
        "cli-logs": (1, "vdc"),
    }
    r = corral("vm", "create", "bad", "--image", "tiny", "--cpus", "1", "--memory", "64",
               "--volume", "2G")  # fmt: skip
    assert r.exit_code != 0 and "SIZE@POOL" in r.output
    for name in ("sdk-vols", "cli-vols"):
        admin.vms.delete(name).wait()
    for v in [vol, *got.values()]:
        admin.volumes.delete(v.id).wait()


def test_cdrom_and_boot_order_by_sdk_and_cli(admin: Client, cli: None, tmp_path: Path) -> None:
    from tests.support.iso import make_iso

    iso = tmp_path / "boot.iso"
    iso.write_bytes(make_iso({"HELLO.TXT": b"hi\n"}))
    admin.images.import_file("boot-iso", iso).wait()
    assert admin.images.get("boot-iso").format == "iso"
    admin.vms.insert_cdrom("vm2", "boot-iso").wait()
    assert admin.vms.get("vm2").cdrom_image_id == admin.images.get("boot-iso").id
    r = corral("vm", "boot-order", "vm2", "cdrom,hd")
    assert r.exit_code == 0, r.output
    assert admin.vms.get("vm2").boot_order == ["cdrom", "hd"]
    r = corral("vm", "cdrom", "eject", "vm2")
    assert r.exit_code == 0, r.output
    assert admin.vms.get("vm2").cdrom_image_id is None
    r = corral("vm", "cdrom", "insert", "vm2", "boot-iso")
    assert r.exit_code == 0, r.output
    assert admin.vms.get("vm2").cdrom_image_id is not None
    admin.vms.eject_cdrom("vm2").wait()
    admin.vms.set_boot_order("vm2", ["hd"]).wait()
    admin.images.delete("boot-iso").wait()


def test_sdk_and_cli_move_a_volume(admin: Client, cli: None) -> None:
    admin.storage_pools.create(
        "vols2", type="local", settings={"path": "/var/lib/corral/volumes2"}, clusters=["default"]
    ).wait()
    try:
        admin.volumes.create("mover", size_gb=1, pool=POOL).wait()
        admin.volumes.move("mover", "vols2").wait(timeout=60)  # never created: a record change
        assert admin.volumes.get("mover").pool_id == admin.storage_pools.get("vols2").id
        r = corral("volume", "move", "mover", "--pool", POOL)
        assert r.exit_code == 0, r.output
        assert r.stdout.strip().endswith(f"Volume mover moved to pool {POOL}.")
        assert admin.volumes.get("mover").pool_id == admin.storage_pools.get(POOL).id
        r = corral("volume", "move", "mover", "--pool", POOL)  # the same pool
        assert r.exit_code == 2 and "invalid_input" in r.output, r.output
    finally:
        admin.volumes.delete("mover").wait(timeout=60)
        admin.storage_pools.update("vols2", state="maintenance").wait()
        admin.storage_pools.delete("vols2").wait(timeout=60)


def test_sdk_and_cli_volumes_from_a_snapshot(admin: Client, cli: None) -> None:
    admin.volumes.create("origin", size_gb=1, pool=POOL, vm="vm1").wait(timeout=60)
    admin.snapshots.create("origin", "golden").wait(timeout=60)
    try:
        op = admin.volumes.create("from-snap", size_gb=2, pool=POOL, snapshot="golden")
        assert op.type == "volume.clone"
        op.wait(timeout=60)
        made = admin.volumes.get("from-snap")
        assert (made.status, made.instantiated, made.size_gb) == ("available", True, 2)
        r = corral(
            "volume",
            "create",
            "from-snap-2",
            "--size",
            "1G",
            "--pool",
            POOL,
            "--snapshot",
            "golden",
        )
        assert r.exit_code == 0, r.output
        assert admin.volumes.get("from-snap-2").instantiated
        with pytest.raises(InvalidInput):  # no vm with a snapshot (checked on the client side)
            admin.volumes.create("bad", size_gb=1, pool=POOL, snapshot="golden", vm="vm1")
    finally:
        for name in ("from-snap", "from-snap-2"):
            admin.volumes.delete(name).wait(timeout=60)
        admin.snapshots.delete("golden").wait(timeout=60)
        admin.volumes.detach("origin").wait(timeout=60)
        admin.volumes.delete("origin").wait(timeout=60)
