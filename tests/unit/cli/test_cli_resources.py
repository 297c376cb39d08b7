"""Zones, clusters, hosts, offerings, images and operations from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from corral.api.images import ImageStatus
from corral.sdk.testing import FakeCorral

from .conftest import Corral


def _rows(output: str) -> list[list[str]]:
    """The cells of a rich table (header first), split on blanks."""
    return [line.split() for line in output.splitlines() if line.strip() and "─" not in line]


def test_zone_and_cluster_commands(corral: Corral, fake: FakeCorral) -> None:
    created = corral("zone", "create", "z1", "-d", "first floor")
    assert created.exit_code == 0, created.output
    zone = next(iter(fake.state.zones.values()))
    assert created.stdout == f"Zone z1 created ({zone.id}).\n"
    args = [
        "cluster",
        "create",
        "c1",
        "--zone",
        "z1",
        "--cpu-overcommit",
        "2",
        "--memory-overcommit",
        "1.5",
    ]
    assert corral(*args).exit_code == 0
    assert _rows(corral("cluster", "list", "--zone", "z1").stdout)[1][2:] == [zone.id, "2", "1.5"]
    assert corral("cluster", "update", "c1", "--cpu-overcommit", "8").exit_code == 0
    assert json.loads(corral("-o", "json", "cluster", "show", "c1").stdout)["cpu_overcommit"] == 8
    in_use = corral("zone", "delete", "z1")
    assert (in_use.exit_code, in_use.stderr.splitlines()[0]) == (
        1,
        "Error [in_use]: zone z1 is in use",
    )
    assert corral("cluster", "delete", "c1").exit_code == 0
    assert corral("zone", "delete", "z1").stdout == "Zone z1 deleted.\n"
    assert _rows(corral("zone", "list").stdout) == [["NAME", "ID", "DESCRIPTION", "CREATED"]]


def test_host_commands(corral: Corral, fake: FakeCorral) -> None:
    corral("zone", "create", "z1")
    corral("cluster", "create", "c1", "--zone", "z1")
    added = corral("host", "add", "https://h1:7070", "--cluster", "c1", "--name", "h1")
    assert added.exit_code == 0, added.output
    host = next(iter(fake.state.hosts.values()))
    assert added.stdout == f"Host h1 added ({host.id}): connected.\n"
    rows = _rows(corral("host", "list", "--cluster", "c1").stdout)
    assert rows[1] == ["h1", host.id, "connected", "yes", "0/16", "0/8192", "0", "https://h1:7070"]
    assert corral("host", "disable", "h1").stdout == "Host h1 disabled.\n"
    assert fake.state.hosts[host.id].enabled is False
    assert corral("host", "enable", "h1").exit_code == 0
    assert "facts.cpu_model" in corral("host", "show", "h1").stdout
    assert corral("host", "remove", "h1").stdout == "Host h1 deleted.\n"
    assert fake.state.hosts == {}


def test_offering_commands(corral: Corral, fake: FakeCorral) -> None:
    result = corral("offering", "create", "medium", "--cpus", "2", "--memory", "4G", "--disk", "20")
    assert result.exit_code == 0, result.output
    offering = next(iter(fake.state.offerings.values()))
    assert (offering.cpus, offering.memory_mb, offering.disk_gb) == (2, 4096, 20)
    rows = _rows(corral("offering", "list").stdout)
    assert rows[1] == ["medium", offering.id, "2", "4096", "MiB", "20", "GiB"]
    assert corral("offering", "delete", "medium").exit_code == 0


def test_image_import_uploads_with_a_progress_bar(
    corral: Corral, fake: FakeCorral, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb" + bytes(3 * 1024 * 1024))
    result = corral("image", "import", "img", str(disk), force_terminal=True)
    assert result.exit_code == 0, result.output
    assert "Uploading disk.qcow2" in result.stderr
    image = next(iter(fake.state.images.values()))
    assert result.stdout == f"Image img imported ({image.id}).\n"
    assert (image.status, image.format) == (ImageStatus.ready, "qcow2")
    assert fake.state.image_data[image.id] == disk.read_bytes()
    rows = _rows(corral("image", "list", "--status", "ready").stdout)
    assert rows[1] == ["img", image.id, "ready", "qcow2", "3.0", "MiB", "3.0", "MiB"]
    copy = tmp_path / "copy.qcow2"
    downloaded = corral("image", "download", "img", str(copy))
    assert downloaded.stdout == f"Saved 3.0 MiB to {copy}.\n"
    assert copy.read_bytes() == disk.read_bytes()


def test_image_import_from_a_url_and_usage_errors(
    corral: Corral, fake: FakeCorral, tmp_path: Path
) -> None:
    result = corral("image", "import", "cirros", "--url", "https://example.org/c.img")
    assert result.exit_code == 0, result.output
    assert next(iter(fake.state.images.values())).source_url == "https://example.org/c.img"
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"x")
    assert corral("image", "import", "both", str(disk), "--url", "https://x/y").exit_code == 2
    assert corral("image", "import", "neither").exit_code == 2
    assert corral("image", "import", "gone", str(tmp_path / "missing")).exit_code == 2
    assert len(fake.state.images) == 1


def test_operation_commands(corral: Corral, fake: FakeCorral) -> None:
    corral("zone", "create", "z1")
    queued = corral("image", "import", "img", "--url", "https://x/img", "--no-wait").stdout.strip()
    listing = corral("op", "list", "--status", "queued")
    assert [row[0] for row in _rows(listing.stdout)[1:]] == [queued]
    assert (
        corral("op", "cancel", queued).stdout == f"Operation {queued} (image.import) cancelled.\n"
    )
    waited = corral("op", "wait", queued)
    assert waited.exit_code == 1
    assert waited.stderr.startswith(
        f"Error [cancelled]: operation {queued} (image.import) was cancelled"
    )
    other = corral("image", "import", "img2", "--url", "https://x/img2", "--no-wait").stdout.strip()
    assert corral("op", "wait", other).stdout == f"Operation {other} (image.import) succeeded.\n"
    refused = corral("op", "cancel", other)
    assert (refused.exit_code, refused.stderr.split(":")[0]) == (1, "Error [not_cancellable]")
    shown = json.loads(corral("op", "show", other, "-o", "json").stdout)
    assert (shown["id"], shown["status"], shown["progress"]) == (other, "succeeded", 100)
    all_ops = json.loads(corral("op", "list", "-o", "json").stdout)
    assert all_ops["total"] == 3
    assert corral("op", "show", "nope").exit_code == 1
