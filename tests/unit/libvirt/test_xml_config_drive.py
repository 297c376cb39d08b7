"""The config drive (a second, read-only CD-ROM drive) in a VM's domain XML, told apart from the
CD-ROM drive by parse, the medium changes and memory restores."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import pytest

from corral.agent.compute.libvirt import cdrom as cdrom_ops
from corral.agent.compute.libvirt.vm_snapshot import with_current_disks
from corral.agent.compute.libvirt.xml.compose import (
    CDROM_ALIAS,
    CONFIG_DRIVE_ALIAS,
    config_drive,
    vm_domain,
)
from corral.agent.compute.libvirt.xml.parse import cdrom_target, parse_domain
from corral.agent.compute.libvirt.xml.util import render
from corral.api.agent import VmSpec
from corral.api.errors import InvalidState
from tests.unit.libvirt.conftest import Golden

ISO = "/var/lib/corral/images/img-1.iso"
CIDATA = "/var/lib/corral/configdrive/0f3c2a.iso"
SPEC = VmSpec(
    vm_id="0f3c2a", name="web-1", cpus=2, memory_mb=512, disk_gb=10, vnc_password="s3cret-pw"
)


def domain(
    spec: VmSpec = SPEC,
    cdrom: str | None = None,
    config_iso: str | None = CIDATA,
    machine: str = "pc",
) -> str:
    return vm_domain(
        spec,
        disk_path="/d/root.qcow2",
        console_dir=Path("/c"),
        kvm=False,
        machine=machine,
        cdrom=cdrom,
        config_iso=config_iso,
    ).to_xml()


def aliases_and_targets(xml: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (
            d.get("device", ""),
            d.find("alias").get("name") if d.find("alias") is not None else None,  # type: ignore[union-attr]
            d.find("target").get("dev") if d.find("target") is not None else None,  # type: ignore[union-attr]
        )
        for d in ET.fromstring(xml).iterfind("devices/disk")
    ]


@pytest.mark.parametrize(
    ("name", "machine"),
    [("disk_config_drive.xml", "pc"), ("disk_config_drive_sata.xml", "q35")],
)
def test_config_drive(name: str, machine: str, golden: Golden) -> None:
    golden(name, render(config_drive(CIDATA, machine).element()))


@pytest.mark.parametrize(
    ("machine", "cdrom", "drive"), [("pc", "hdc", "hdd"), ("q35", "sdc", "sdd")]
)
def test_the_config_drive_follows_the_cdrom_drive_on_its_bus(
    machine: str, cdrom: str, drive: str
) -> None:
    xml = domain(cdrom=ISO, machine=machine)
    assert aliases_and_targets(xml) == [
        ("disk", None, "vda"),
        ("cdrom", CDROM_ALIAS, cdrom),
        ("cdrom", CONFIG_DRIVE_ALIAS, drive),
    ]
    disk = ET.fromstring(xml).findall("devices/disk")[2]
    assert disk.find("readonly") is not None and disk.find("boot") is None
    assert disk.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    buses = {d.find("target").get("bus") for d in ET.fromstring(xml).findall("devices/disk")[1:]}  # type: ignore[union-attr]
    assert len(buses) == 1


def test_no_config_drive_without_its_iso() -> None:
    assert [a for _, a, _ in aliases_and_targets(domain(config_iso=None))] == [None, CDROM_ALIAS]
    assert parse_domain(domain(config_iso=None)).config_drive is None


def test_the_boot_order_is_unchanged() -> None:
    spec = SPEC.model_copy(update={"boot": ["cdrom", "hd"]})
    with_drive, without = domain(spec, ISO), domain(spec, ISO, config_iso=None)
    assert parse_domain(with_drive).boot == parse_domain(without).boot == ("cdrom", "hd")
    os_with, os_without = (ET.fromstring(x).find("os") for x in (with_drive, without))
    assert os_with is not None and os_without is not None
    assert ET.tostring(os_with) == ET.tostring(os_without)
    assert ET.fromstring(with_drive).find("devices/disk/boot") is None  # no per-device order


def _config_drive_first(xml: str) -> str:
    """The same domain with the config drive listed before the CD-ROM drive (as a hand-edited or
    older definition could have it)."""
    root = ET.fromstring(xml)
    devices = root.find("devices")
    assert devices is not None
    disks = devices.findall("disk")
    devices.remove(disks[2])
    devices.insert(1, disks[2])
    return ET.tostring(root, encoding="unicode")


@pytest.mark.parametrize("reorder", [False, True])
def test_parse_tells_the_two_drives_apart(reorder: bool) -> None:
    xml = domain(cdrom=ISO)
    xml = _config_drive_first(xml) if reorder else xml
    facts = parse_domain(xml)
    assert facts.cdrom == ISO and facts.config_drive == CIDATA
    assert facts.disk_path == "/d/root.qcow2" and facts.data_disks == ()
    assert cdrom_target(xml) == "hdc"
    empty = parse_domain(_config_drive_first(domain()) if reorder else domain())
    assert empty.cdrom is None and empty.config_drive == CIDATA


class FakeDom:
    """The two calls ``cdrom.change_medium`` makes on a stopped domain."""

    def __init__(self, xml: str) -> None:
        self.xml = xml
        self.updates: list[tuple[str, int]] = []

    def XMLDesc(self, flags: int) -> str:
        return self.xml

    def state(self) -> tuple[int, int]:
        return libvirt.VIR_DOMAIN_SHUTOFF, 0

    def updateDeviceFlags(self, xml: str, flags: int) -> None:
        self.updates.append((xml, flags))


def test_medium_changes_go_to_the_cdrom_drive_never_the_config_drive() -> None:
    dom: Any = FakeDom(_config_drive_first(domain()))
    cdrom_ops.change_medium(dom, vm_id=SPEC.vm_id, path=ISO)
    assert len(dom.updates) == 1
    xml, flags = dom.updates[0]
    disk = ET.fromstring(xml)
    assert flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG
    assert disk.find("alias").get("name") == CDROM_ALIAS  # type: ignore[union-attr]
    assert disk.find("target").get("dev") == "hdc"  # type: ignore[union-attr]
    assert disk.find("source").get("file") == ISO  # type: ignore[union-attr]
    assert cdrom_ops.medium(dom, vm_id=SPEC.vm_id) is None  # the config drive is no medium


@pytest.mark.skipif(not shutil.which("virt-xml-validate"), reason="virt-xml-validate missing")
@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_domain_with_config_drive_is_valid_libvirt_xml(machine: str, tmp_path: Path) -> None:
    path = tmp_path / "d.xml"
    path.write_text(domain(cdrom=ISO, machine=machine))
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# --- memory restores: the config drive may come or go between the save and the restore ------

DRIVE = (
    "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
    f"<source file='{CIDATA}'/><target dev='hdd' bus='ide'/><readonly/>"
    f"<alias name='{CONFIG_DRIVE_ALIAS}'/></disk>"
)
ROOT = (
    "<disk type='file' device='disk'><source file='/r/root'/><target dev='vda'/>"
    "<address type='pci' slot='0x04'/></disk>"
    "<disk type='file' device='cdrom'><target dev='hdc'/><alias name='ua-cdrom'/></disk>"
)


def dom_xml(*disks: str) -> str:
    return f"<domain type='qemu'><devices>{''.join(disks)}</devices></domain>"


def test_restore_keeps_a_config_drive_gone_since_as_an_empty_drive() -> None:
    root = ET.fromstring(with_current_disks(dom_xml(ROOT, DRIVE), dom_xml(ROOT), vm_id="vm-1"))
    drives = [d for d in root.iterfind("devices/disk") if d.find("target[@dev='hdd']") is not None]
    assert len(drives) == 1 and drives[0].find("source") is None
    assert drives[0].find("alias").get("name") == CONFIG_DRIVE_ALIAS  # type: ignore[union-attr]


def test_restore_leaves_out_a_config_drive_added_since() -> None:
    root = ET.fromstring(with_current_disks(dom_xml(ROOT), dom_xml(ROOT, DRIVE), vm_id="vm-1"))
    assert root.find("devices/disk/target[@dev='hdd']") is None
    assert root.find("devices/disk/target[@dev='vda']/..") is not None


def test_restore_with_the_config_drive_both_times_takes_its_current_file() -> None:
    later = DRIVE.replace(CIDATA, "/other/0f3c2a.iso")
    root = ET.fromstring(with_current_disks(dom_xml(ROOT, DRIVE), dom_xml(ROOT, later), vm_id="v"))
    sources = [s.get("file") for s in root.iterfind("devices/disk/source")]
    assert sources == ["/r/root", "/other/0f3c2a.iso"]


def test_restore_still_refuses_other_added_disks() -> None:
    vol = (
        "<disk type='file'><source file='/p/n'/><target dev='vdc'/><alias name='ua-vol-n'/></disk>"
    )
    with pytest.raises(InvalidState, match="detach them first"):
        with_current_disks(dom_xml(ROOT), dom_xml(ROOT, DRIVE, vol), vm_id="vm-1")
