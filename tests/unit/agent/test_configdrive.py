"""NoCloud config drive images (``corral.agent.configdrive``), read back with pycdlib."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import pytest

from corral.agent.configdrive import (
    VOLUME_LABEL,
    build_iso,
    drive_digest,
    iso_digest,
    iso_path,
    remove_iso,
    stage_iso,
)
from corral.api.agent import ConfigDrive
from corral.api.errors import InvalidInput

META = "instance-id: vm-0f3c2a\nlocal-hostname: web-1\n"
NETWORK = (
    "version: 2\n"
    "ethernets:\n"
    "  nic0:\n"
    "    match: {macaddress: '52:54:00:12:34:56'}\n"
    "    addresses: [10.0.0.5/24]\n"
    "    nameservers: {addresses: [10.0.0.1]}\n"
)
USER = "#cloud-config\nruncmd: [echo héllo]\n"
DRIVE = ConfigDrive(meta_data=META, network_config=NETWORK, user_data=USER)


def read_back(path: Path) -> tuple[str, str, dict[str, bytes], list[str]]:
    """(primary volume label, Joliet volume label, {Rock Ridge name: bytes}, Joliet names)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd is not None and iso.joliet_vd is not None
        label = iso.pvd.volume_identifier.decode().rstrip()
        joliet_label = iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip()
        files: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        joliet = [
            c.file_identifier().decode("utf-16-be")
            for c in iso.list_children(joliet_path="/")
            if not (c.is_dot() or c.is_dotdot())
        ]
    finally:
        iso.close()
    return label, joliet_label, files, joliet


def test_the_image_has_the_cidata_label_and_the_nocloud_files(tmp_path: Path) -> None:
    path = tmp_path / "vm.iso"
    build_iso(DRIVE, path)
    label, joliet_label, files, joliet = read_back(path)
    assert label == joliet_label == VOLUME_LABEL == "cidata"
    assert files == {
        "meta-data": META.encode(),
        "network-config": NETWORK.encode(),
        "user-data": USER.encode(),
    }
    assert sorted(joliet) == ["meta-data", "network-config", "user-data"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # user-data may hold secrets
    assert [p.name for p in tmp_path.iterdir()] == ["vm.iso"]  # no temp file left
    assert path.read_bytes()[0x8001:0x8006] == b"CD001"  # what blkid and the guest probe


def test_user_data_is_always_there_and_network_config_only_when_given(tmp_path: Path) -> None:
    """cloud-init's NoCloud refuses a cidata volume without user-data (a required file)."""
    path = tmp_path / "vm.iso"
    build_iso(ConfigDrive(meta_data=META), path)
    assert read_back(path)[2] == {"meta-data": META.encode(), "user-data": b""}


def test_equal_input_leaves_the_file_alone_and_changed_input_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "vm.iso"
    build_iso(DRIVE, path)
    before = path.stat()
    data = path.read_bytes()
    assert iso_digest(path) == drive_digest(DRIVE)
    assert stage_iso(DRIVE.model_copy(), path) is None
    build_iso(ConfigDrive(meta_data=META, network_config=NETWORK, user_data=USER), path)
    assert path.stat().st_ino == before.st_ino and path.read_bytes() == data

    changed = DRIVE.model_copy(update={"network_config": NETWORK.replace("10.0.0.5", "10.0.0.6")})
    assert drive_digest(changed) != drive_digest(DRIVE)
    build_iso(changed, path)
    assert path.stat().st_ino != before.st_ino  # a new file renamed over the old one
    assert read_back(path)[2]["network-config"] == changed.network_config.encode()  # type: ignore[union-attr]
    assert iso_digest(path) == drive_digest(changed)


def test_a_foreign_or_broken_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "vm.iso"
    path.write_bytes(b"not an iso" * 1000)
    assert iso_digest(path) is None
    build_iso(DRIVE, path)
    assert read_back(path)[2]["meta-data"] == META.encode()
    assert iso_digest(tmp_path / "absent.iso") is None


def test_the_digest_tells_files_apart() -> None:
    """Moving text from one file to another is a different drive."""
    a = ConfigDrive(meta_data="a", user_data="b")
    b = ConfigDrive(meta_data="ab", user_data="")
    c = ConfigDrive(meta_data="a", network_config="", user_data="b")
    assert len({drive_digest(a), drive_digest(b), drive_digest(c)}) == 3


def test_paths_and_removal(tmp_path: Path) -> None:
    assert iso_path(tmp_path, "0f3c2a") == tmp_path / "0f3c2a.iso"
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(InvalidInput):
            iso_path(tmp_path, bad)
    path = tmp_path / "vm.iso"
    build_iso(DRIVE, path)
    remove_iso(path)
    remove_iso(path)  # absent is success
    assert not path.exists()
