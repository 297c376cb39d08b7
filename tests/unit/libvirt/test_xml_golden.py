"""Domain XML builders compared with golden files (regenerate: CORRAL_REGENERATE_GOLDEN=1)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.agent.compute.libvirt.xml.channel import GuestAgentChannel
from corral.agent.compute.libvirt.xml.compose import vm_domain
from corral.agent.compute.libvirt.xml.cpu import Cpu, Vcpu
from corral.agent.compute.libvirt.xml.disk import Disk
from corral.agent.compute.libvirt.xml.domain import Device, Domain
from corral.agent.compute.libvirt.xml.features import Features
from corral.agent.compute.libvirt.xml.graphics import VncGraphics
from corral.agent.compute.libvirt.xml.interface import Interface
from corral.agent.compute.libvirt.xml.memory import Memory
from corral.agent.compute.libvirt.xml.metadata import VmMetadata
from corral.agent.compute.libvirt.xml.os import Os
from corral.agent.compute.libvirt.xml.serial import FileSerial
from corral.agent.compute.libvirt.xml.util import render
from corral.api.agent import VmSpec

GOLDEN_DIR = Path(__file__).parent / "golden"
Golden = Callable[[str, str], None]

SPEC = VmSpec(
    vm_id="0f3c2a", name="web-1", cpus=2, memory_mb=512, disk_gb=10, vnc_password="s3cret-pw"
)
MAC = "52:54:00:12:34:56"

ELEMENTS: dict[str, Device] = {
    "disk_qcow2.xml": Disk(source="/var/lib/corral/disks/0f3c2a.qcow2"),
    "disk_raw_readonly.xml": Disk(source="/srv/boot.img", format="raw", readonly=True),
    "disk_writeback.xml": Disk(source="/srv/d.qcow2", cache="writeback", discard=None),
    "interface_bridge.xml": Interface(kind="bridge", source="br0", mac=MAC),
    "interface_network.xml": Interface(kind="network", source="default", mac=MAC, mtu=1450),
    "interface_ovs_vlan.xml": Interface(
        kind="bridge", source="br-int", mac=MAC, openvswitch=True, vlan_tag=42, target_dev="tap1"
    ),
    "serial_file.xml": FileSerial(path="/var/log/corral/console/0f3c2a.log"),
    "serial_file_append.xml": FileSerial(path="/tmp/c.log", port=1, append=True),
    "graphics_vnc.xml": VncGraphics(password="s3cret-pw"),
    "channel_guest_agent.xml": GuestAgentChannel(),
    "features_acpi_apic.xml": Features(),
    "features_tcg.xml": Features(tcg_tb_cache_mib=32),
    "cpu_host_model.xml": Cpu(cores=4, mode="host-model"),
    "cpu_default.xml": Cpu(cores=1),
    "vcpu.xml": Vcpu(3),
    "os_pc.xml": Os(),
    "os_q35_cdrom_first.xml": Os(machine="q35", boot=("cdrom", "hd")),
    "metadata.xml": VmMetadata(vm_id="0f3c2a", name="web-1"),
}


@pytest.mark.parametrize("name", sorted(ELEMENTS))
def test_element(name: str, golden: Golden) -> None:
    golden(name, render(ELEMENTS[name].element()))


def test_memory(golden: Golden) -> None:
    root = ET.Element("domain")
    root.extend(Memory(512).elements())
    golden("memory.xml", render(root))


@pytest.mark.parametrize("kvm", [False, True], ids=["tcg", "kvm"])
def test_vm_domain(kvm: bool, golden: Golden) -> None:
    domain = vm_domain(
        SPEC, disk_path="/var/lib/corral/disks/0f3c2a.qcow2", console_dir=Path("/c"), kvm=kvm
    )
    golden(f"domain_{'kvm' if kvm else 'tcg'}.xml", domain.to_xml())


def _minimal(domain_type: str, features: Features) -> Domain:
    return Domain(
        type="kvm" if domain_type == "kvm" else "qemu",
        name="x",
        memory=Memory(16),
        vcpu=Vcpu(1),
        os=Os(),
        features=features,
    )


@pytest.mark.parametrize("features", [Features(), Features(tcg_tb_cache_mib=8)])
def test_tcg_domain_always_has_a_bounded_translation_cache(features: Features) -> None:
    root = _minimal("qemu", features).element()
    cache = root.find("features/tcg/tb-cache")
    assert cache is not None and cache.get("unit") == "MiB"
    assert int(cache.text or 0) == (features.tcg_tb_cache_mib or 32)


def test_kvm_domain_never_has_tcg_features() -> None:
    root = _minimal("kvm", Features(tcg_tb_cache_mib=32)).element()
    assert root.find("features/tcg") is None
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None


def test_optional_identity_elements_are_omitted() -> None:
    root = _minimal("qemu", Features()).element()
    assert [root.find(tag) for tag in ("uuid", "title", "metadata", "cpu")] == [None] * 4


@pytest.mark.skipif(not shutil.which("virt-xml-validate"), reason="virt-xml-validate missing")
@pytest.mark.parametrize("name", ["domain_tcg.xml", "domain_kvm.xml"])
def test_golden_domains_are_valid_libvirt_xml(name: str) -> None:
    result = subprocess.run(
        ["virt-xml-validate", str(GOLDEN_DIR / name), "domain"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
