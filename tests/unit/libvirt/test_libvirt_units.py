"""Pure parts of the libvirt driver: naming, state mapping, XML parsing, the boot sector."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import libvirt
import pytest

from corral.agent.compute.libvirt.bootsector import (
    ASSEMBLY,
    DISK_BYTES,
    READY_MARKER,
    boot_sector,
    write_boot_disk,
)
from corral.agent.compute.libvirt.facts import version_string
from corral.agent.compute.libvirt.naming import domain_name, domain_uuid, vm_id_of
from corral.agent.compute.libvirt.states import event_power_state, power_state
from corral.agent.compute.libvirt.xml.compose import vm_domain
from corral.agent.compute.libvirt.xml.parse import parse_domain
from corral.api.agent import VmSpec
from corral.api.errors import InvalidInput
from corral.api.vms import PowerState


def test_domain_names_round_trip_and_uuids_are_stable() -> None:
    assert domain_name("abc") == "corral-abc"
    assert vm_id_of("corral-abc") == "abc"
    assert vm_id_of("corral-") is None and vm_id_of("other-abc") is None
    assert vm_id_of("corral.probe-kvm-1") is None
    assert domain_uuid("abc") == domain_uuid("abc") != domain_uuid("abd")


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "a\nb"])
def test_unusable_vm_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        domain_name(bad)


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, 1, PowerState.running),
        (libvirt.VIR_DOMAIN_PAUSED, 1, PowerState.paused),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, PowerState.stopped),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, PowerState.crashed),
        (libvirt.VIR_DOMAIN_SHUTDOWN, 0, PowerState.running),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, PowerState.paused),
        (libvirt.VIR_DOMAIN_NOSTATE, 0, PowerState.unknown),
    ],
)
def test_power_state(state: int, reason: int, expected: PowerState) -> None:
    assert power_state(state, reason) == expected


@pytest.mark.parametrize(
    ("event", "detail", "expected"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STARTED, 0, (PowerState.running, "started:0")),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0, (PowerState.paused, "suspended:0")),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, 0, (PowerState.running, "resumed:0")),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
            (PowerState.stopped, "stopped:shutdown"),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED,
            (PowerState.stopped, "stopped:destroyed"),
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
            (PowerState.crashed, "stopped:crashed"),
        ),
        (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, 0, (PowerState.absent, "undefined:0")),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, 0, (PowerState.crashed, "crashed:0")),
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, 0, None),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 1, None),
        (999, 0, None),
    ],
)
def test_event_power_state(
    event: int, detail: int, expected: tuple[PowerState, str] | None
) -> None:
    assert event_power_state(event, detail) == expected


def test_parse_reads_back_a_composed_domain() -> None:
    spec = VmSpec(vm_id="v1", name="web", cpus=3, memory_mb=768, disk_gb=1, vnc_password="x")
    xml = vm_domain(spec, disk_path="/d/v1.qcow2", console_dir=Path("/c"), kvm=False).to_xml()
    facts = parse_domain(xml)
    assert (facts.vm_id, facts.name, facts.domain_name) == ("v1", "web", "corral-v1")
    assert (facts.cpus, facts.memory_mb, facts.domain_type) == (3, 768, "qemu")
    assert (facts.disk_path, facts.vnc_port) == ("/d/v1.qcow2", None)


def test_parse_live_xml_in_kib_with_a_vnc_port() -> None:
    live = """<domain type='kvm'><name>other</name><title>t</title>
      <memory unit='KiB'>1048576</memory><vcpu>4</vcpu>
      <devices><disk type='file' device='cdrom'><source file='/iso'/></disk>
      <disk type='block' device='disk'><source dev='/dev/vg/x'/></disk>
      <graphics type='vnc' port='5907' autoport='yes'/></devices></domain>"""
    facts = parse_domain(live)
    assert (facts.vm_id, facts.name, facts.memory_mb, facts.cpus) == (None, "t", 1024, 4)
    assert (facts.disk_path, facts.vnc_port) == ("/dev/vg/x", 5907)


def test_version_string() -> None:
    assert version_string(9000000) == "9.0.0"
    assert version_string(7002001) == "7.2.1"


def test_boot_sector_layout(tmp_path: Path) -> None:
    sector = boot_sector(poweroff_after_ticks=0x1234)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert READY_MARKER.encode() in sector
    assert sector[0x46:0x48] == b"\x34\x12"
    disk = tmp_path / "boot.img"
    write_boot_disk(disk, poweroff_after_ticks=1)
    assert disk.stat().st_size == DISK_BYTES
    assert disk.read_bytes()[:512] == boot_sector(poweroff_after_ticks=1)
    with pytest.raises(InvalidInput):
        boot_sector(poweroff_after_ticks=0x10000)


@pytest.mark.skipif(not shutil.which("as") or not shutil.which("objcopy"), reason="no binutils")
def test_boot_sector_is_its_documented_assembly(tmp_path: Path) -> None:
    (tmp_path / "s.S").write_text(ASSEMBLY)
    subprocess.run(["as", "--32", "-o", "s.o", "s.S"], cwd=tmp_path, check=True)
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", "s.o", "s.bin"], cwd=tmp_path, check=True
    )
    code = (tmp_path / "s.bin").read_bytes()
    assert boot_sector()[: len(code)] == code
    assert not any(boot_sector()[len(code) : 510])
