"""Data-volume disks in the domain XML: file and network sources, pool secrets, serial, alias,
shareable, iotune; and reading them back (drift)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from corral.agent.compute.libvirt.secrets import secret_value, secret_xml
from corral.agent.compute.libvirt.xml.compose import data_disk, disk_alias, vm_domain
from corral.agent.compute.libvirt.xml.disk import Disk, IoTune, NetworkSource
from corral.agent.compute.libvirt.xml.parse import disk_targets, parse_domain
from corral.agent.storage.backend import DiskAuth, DiskSource
from corral.api.agent import DataDisk, PoolRef, VmSpec, VolumeRef
from corral.api.errors import InvalidInput
from corral.api.volumes import VolumeQos

VOLUME_ID = "0123456789abcdef0123456789abcdef"
KEY = base64.b64encode(b"sixteen byte key").decode()
SPEC = VmSpec(vm_id="0f3c2a", name="web-1", cpus=1, memory_mb=256, disk_gb=1, vnc_password="pw")


def disk(
    volume_id: str = VOLUME_ID,
    device: str = "vdb",
    *,
    pool: str = "local",
    shareable: bool = False,
    qos: VolumeQos | None = None,
) -> DataDisk:
    ref = PoolRef(id="p1", type=pool, settings={})  # type: ignore[arg-type]
    volume = VolumeRef(volume_id=volume_id, pool=ref, name=volume_id, size_gb=1)
    return DataDisk(volume=volume, device=device, shareable=shareable, qos=qos or VolumeQos())


FILE = DiskSource(kind="file", format="qcow2", path="/srv/pool/volumes/v1")
RAW = DiskSource(kind="file", format="raw", path="/srv/pool/volumes/v2")
RBD = DiskSource(
    kind="network",
    format="raw",
    protocol="rbd",
    name="vms/volume-1",
    hosts=(("10.0.0.1", 6789), ("10.0.0.2", 3300)),
    auth=DiskAuth(type="ceph", username="corral", secret=KEY, pool_id="p1"),
)
ISCSI = DiskSource(
    kind="network",
    format="raw",
    protocol="iscsi",
    name="iqn.2026-01.dev.corral:pool/3",
    hosts=(("127.0.0.1", 3260),),
    auth=DiskAuth(type="iscsi", username="chap", secret="chap-secret", pool_id="p1"),
)


def element(d: DataDisk, source: DiskSource) -> ET.Element:
    return data_disk(d, source).element()


def test_file_volume_has_serial_alias_and_no_iotune_when_unlimited() -> None:
    e = element(disk(), FILE)
    assert (e.get("type"), e.get("device")) == ("file", "disk")
    assert e.find("driver").attrib == {"name": "qemu", "type": "qcow2", "discard": "unmap"}  # type: ignore[union-attr]
    assert e.find("source").attrib == {"file": "/srv/pool/volumes/v1"}  # type: ignore[union-attr]
    assert e.find("target").attrib == {"dev": "vdb", "bus": "virtio"}  # type: ignore[union-attr]
    assert e.findtext("serial") == VOLUME_ID[:20]
    assert e.find("alias").get("name") == f"ua-vol-{VOLUME_ID}"  # type: ignore[union-attr]
    assert e.find("iotune") is None and e.find("shareable") is None and e.find("auth") is None


def test_iotune_lists_only_the_limits_that_are_set() -> None:
    qos = VolumeQos(total_iops_sec=200, read_bytes_sec=1 << 20)
    tune = element(disk(qos=qos), FILE).find("iotune")
    assert tune is not None
    assert {c.tag: c.text for c in tune} == {"total_iops_sec": "200", "read_bytes_sec": "1048576"}
    assert IoTune(write_iops_sec=5).limits() == {
        "total_iops_sec": 0,
        "read_iops_sec": 0,
        "write_iops_sec": 5,
        "total_bytes_sec": 0,
        "read_bytes_sec": 0,
        "write_bytes_sec": 0,
    }


def test_rbd_volume_is_a_network_disk_with_the_pool_secret() -> None:
    e = element(disk(pool="rbd"), RBD)
    assert e.get("type") == "network"
    source = e.find("source")
    assert source is not None and source.attrib == {"protocol": "rbd", "name": "vms/volume-1"}
    assert [h.attrib for h in source.iterfind("host")] == [
        {"name": "10.0.0.1", "port": "6789"},
        {"name": "10.0.0.2", "port": "3300"},
    ]
    auth = e.find("auth")
    assert auth is not None and auth.get("username") == "corral"
    assert auth.find("secret").attrib == {"type": "ceph", "usage": "corral-pool-p1"}  # type: ignore[union-attr]
    assert KEY not in ET.tostring(e, encoding="unicode")


def test_iscsi_volume_refers_to_an_iscsi_secret() -> None:
    e = element(disk(pool="iscsi"), ISCSI)
    assert e.find("source").get("name") == "iqn.2026-01.dev.corral:pool/3"  # type: ignore[union-attr]
    assert e.find("auth/secret").attrib == {"type": "iscsi", "usage": "corral-pool-p1"}  # type: ignore[union-attr]


def test_shareable_volume_is_raw_with_host_cache_off() -> None:
    e = element(disk(shareable=True), RAW)
    assert e.find("shareable") is not None
    assert e.find("driver").get("cache") == "none"  # type: ignore[union-attr]


def test_shareable_qcow2_is_refused() -> None:
    with pytest.raises(InvalidInput, match="raw"):
        element(disk(shareable=True), FILE)


@pytest.mark.parametrize("volume_id", ["has.dot", "has/slash", ""])
def test_volume_ids_unusable_as_alias_are_refused(volume_id: str) -> None:
    with pytest.raises(InvalidInput):
        disk_alias(volume_id)


def test_credentials_only_on_network_disks() -> None:
    from corral.agent.compute.libvirt.xml.disk import DiskAuthRef

    with pytest.raises(InvalidInput):
        Disk(source="/x", auth=DiskAuthRef(type="ceph", username="u", usage="x")).element()
    assert Disk(source=NetworkSource(protocol="nfs", name="/e/f")).element().get("type") == (
        "network"
    )


def domain_with_volumes() -> str:
    disks = [
        (disk("aaaa", "vdb"), FILE),
        (disk("bbbb", "vdc", pool="rbd", qos=VolumeQos(total_bytes_sec=10**6)), RBD),
        (disk("cccc", "vdd", shareable=True), RAW),
    ]
    return vm_domain(
        SPEC, disk_path="/srv/root.qcow2", console_dir=Path("/c"), kvm=False, disks=disks
    ).to_xml()


def test_vm_domain_has_the_root_disk_first_then_the_volumes_in_order() -> None:
    root = ET.fromstring(domain_with_volumes())
    targets = [d.find("target").get("dev") for d in root.iterfind("devices/disk[@device='disk']")]  # type: ignore[union-attr]
    assert targets == ["vda", "vdb", "vdc", "vdd"]


def test_vm_domain_refuses_duplicate_devices_or_volumes() -> None:
    for disks in (
        [(disk("aaaa", "vdb"), FILE), (disk("bbbb", "vdb"), FILE)],
        [(disk("aaaa", "vdb"), FILE), (disk("aaaa", "vdc"), FILE)],
    ):
        with pytest.raises(InvalidInput, match="distinct"):
            vm_domain(SPEC, disk_path="/r", console_dir=Path("/c"), kvm=False, disks=disks)


def test_parse_finds_the_root_disk_and_the_volumes() -> None:
    xml = domain_with_volumes()
    facts = parse_domain(xml)
    assert facts.disk_path == "/srv/root.qcow2"
    assert [(d.volume_id, d.target, d.source) for d in facts.data_disks] == [
        ("aaaa", "vdb", "/srv/pool/volumes/v1"),
        ("bbbb", "vdc", "vms/volume-1"),
        ("cccc", "vdd", "/srv/pool/volumes/v2"),
    ]
    assert disk_targets(xml) == {
        "vda": None,
        "vdb": "aaaa",
        "vdc": "bbbb",
        "vdd": "cccc",
        "hdc": None,  # the CD-ROM drive
    }


def test_root_disk_is_found_even_after_a_volume_listed_first() -> None:
    root = ET.fromstring(domain_with_volumes())
    devices = root.find("devices")
    assert devices is not None
    vda = devices.find("disk")
    assert vda is not None
    devices.remove(vda)
    devices.append(vda)  # libvirt may list disks in another order
    assert parse_domain(ET.tostring(root, encoding="unicode")).disk_path == "/srv/root.qcow2"


@pytest.mark.skipif(not shutil.which("virt-xml-validate"), reason="virt-xml-validate missing")
def test_domain_with_every_kind_of_volume_is_valid_libvirt_xml(tmp_path: Path) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(domain_with_volumes())
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_pool_secret_definition_and_value() -> None:
    ceph = RBD.auth
    iscsi = ISCSI.auth
    assert ceph is not None and iscsi is not None
    secret = ET.fromstring(secret_xml(ceph))
    assert (secret.get("ephemeral"), secret.get("private")) == ("no", "yes")
    assert secret.find("usage").get("type") == "ceph"  # type: ignore[union-attr]
    assert secret.findtext("usage/name") == "corral-pool-p1"
    assert secret_xml(ceph) == secret_xml(ceph)  # same UUID: defining again updates it
    assert ET.fromstring(secret_xml(iscsi)).findtext("usage/target") == "corral-pool-p1"
    assert secret_value(ceph) == b"sixteen byte key"
    assert secret_value(iscsi) == b"chap-secret"
    assert KEY not in secret_xml(ceph)


def test_a_cephx_key_that_is_not_base64_is_refused_without_showing_it() -> None:
    bad = DiskAuth(type="ceph", username="u", secret="not base64 !!", pool_id="p1")
    with pytest.raises(InvalidInput) as err:
        secret_value(bad)
    assert "not base64 !!" not in str(err.value.to_body())
