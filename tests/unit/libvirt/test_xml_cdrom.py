"""The CD-ROM drive and the boot order in a VM's domain XML."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from corral.agent.compute.libvirt.cdrom import _with_medium
from corral.agent.compute.libvirt.xml.compose import CDROM_ALIAS, cdrom_drive, vm_domain
from corral.agent.compute.libvirt.xml.disk import Disk
from corral.agent.compute.libvirt.xml.parse import cdrom_target, parse_domain
from corral.agent.compute.libvirt.xml.util import render
from corral.api.agent import VmSpec
from corral.api.errors import InvalidInput
from tests.unit.libvirt.conftest import Golden

ISO = "/var/lib/corral/images/img-1.iso"
SPEC = VmSpec(
    vm_id="0f3c2a", name="web-1", cpus=2, memory_mb=512, disk_gb=10, vnc_password="s3cret-pw"
)


def domain(spec: VmSpec = SPEC, cdrom: str | None = None, machine: str = "pc") -> str:
    return vm_domain(
        spec,
        disk_path="/d/root.qcow2",
        console_dir=Path("/c"),
        kvm=False,
        machine=machine,
        cdrom=cdrom,
    ).to_xml()


@pytest.mark.parametrize(
    ("name", "path", "machine"),
    [
        ("disk_cdrom_empty.xml", None, "pc"),
        ("disk_cdrom_iso.xml", ISO, "pc"),
        ("disk_cdrom_sata.xml", ISO, "q35"),
    ],
)
def test_cdrom_drive(name: str, path: str | None, machine: str, golden: Golden) -> None:
    golden(name, render(cdrom_drive(path, machine).element()))


def test_empty_drive_has_no_source_and_is_read_only_raw() -> None:
    disk = cdrom_drive(None).element()
    assert disk.get("device") == "cdrom" and disk.get("type") == "file"
    assert disk.find("source") is None
    assert disk.find("readonly") is not None
    driver = disk.find("driver")
    assert driver is not None and driver.get("type") == "raw" and driver.get("discard") is None
    assert disk.find("alias") is not None and disk.find("alias").get("name") == CDROM_ALIAS  # type: ignore[union-attr]


def test_only_a_cdrom_may_be_empty() -> None:
    with pytest.raises(InvalidInput):
        Disk(source=None).element()


def test_every_domain_has_a_cdrom_drive_after_its_disks() -> None:
    root = ET.fromstring(domain())
    disks = list(root.iterfind("devices/disk"))
    assert [d.get("device") for d in disks] == ["disk", "cdrom"]
    assert cdrom_target(domain()) == "hdc"
    assert cdrom_target(domain(machine="q35")) == "sdc"
    facts = parse_domain(domain(cdrom=ISO))
    assert facts.cdrom == ISO and facts.disk_path == "/d/root.qcow2"
    assert parse_domain(domain()).cdrom is None


@pytest.mark.parametrize(
    ("boot", "expected"),
    [(["hd"], ("hd",)), (["cdrom", "hd"], ("cdrom", "hd")), (["cdrom"], ("cdrom",))],
)
def test_boot_order_follows_the_spec(boot: list[str], expected: tuple[str, ...]) -> None:
    spec = SPEC.model_copy(update={"boot": boot})
    assert parse_domain(domain(spec)).boot == expected


def test_medium_change_xml_keeps_the_drive_and_swaps_the_source() -> None:
    live = ET.fromstring(render(cdrom_drive(None).element()))
    ET.SubElement(live, "address", type="drive")  # live XML has more: left out of the update
    inserted = ET.fromstring(_with_medium(live, ISO))
    source = inserted.find("source")
    assert source is not None and source.get("file") == ISO
    assert inserted.find("target") is not None and inserted.find("address") is None
    ejected = ET.fromstring(_with_medium(inserted, None))
    assert ejected.find("source") is None and ejected.find("readonly") is not None


@pytest.mark.skipif(not shutil.which("virt-xml-validate"), reason="virt-xml-validate missing")
@pytest.mark.parametrize("cdrom", [None, ISO])
def test_domain_with_cdrom_is_valid_libvirt_xml(cdrom: str | None, tmp_path: Path) -> None:
    path = tmp_path / "d.xml"
    path.write_text(domain(SPEC.model_copy(update={"boot": ["cdrom", "hd"]}), cdrom))
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
