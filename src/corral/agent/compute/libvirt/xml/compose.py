"""Compose the domain of a Corral VM from its ``VmSpec``."""

from __future__ import annotations

from pathlib import Path

from corral.agent.compute.libvirt.naming import domain_name, domain_uuid
from corral.agent.compute.libvirt.xml.channel import GuestAgentChannel
from corral.agent.compute.libvirt.xml.cpu import Cpu, Vcpu
from corral.agent.compute.libvirt.xml.disk import Disk
from corral.agent.compute.libvirt.xml.domain import Domain
from corral.agent.compute.libvirt.xml.features import Features
from corral.agent.compute.libvirt.xml.graphics import VncGraphics
from corral.agent.compute.libvirt.xml.input import Tablet
from corral.agent.compute.libvirt.xml.memory import Memory
from corral.agent.compute.libvirt.xml.metadata import VmMetadata
from corral.agent.compute.libvirt.xml.os import Os
from corral.agent.compute.libvirt.xml.rng import Rng
from corral.agent.compute.libvirt.xml.serial import FileSerial
from corral.agent.compute.libvirt.xml.video import Video
from corral.api.agent import VmSpec


def console_log_path(console_dir: Path, vm_id: str) -> Path:
    """Where the serial console of ``vm_id`` is written."""
    return console_dir / f"{vm_id}.log"


def vm_domain(
    spec: VmSpec, *, disk_path: str, console_dir: Path, kvm: bool, machine: str = "pc"
) -> Domain:
    """The domain of ``spec``: one qcow2 virtio disk booted as ``hd``, serial console to
    ``<console_dir>/<vm_id>.log``, VNC on the loopback, guest agent channel, virtio-rng.
    ``kvm`` chooses hardware virtualization (host-model CPU) over TCG (QEMU's default CPU)."""
    return Domain(
        type="kvm" if kvm else "qemu",
        name=domain_name(spec.vm_id),
        uuid=domain_uuid(spec.vm_id),
        title=spec.name,
        metadata=VmMetadata(vm_id=spec.vm_id, name=spec.name),
        memory=Memory(spec.memory_mb),
        vcpu=Vcpu(spec.cpus),
        os=Os(machine=machine, boot=("hd",)),
        features=Features(acpi=True, apic=True),
        cpu=Cpu(cores=spec.cpus, mode="host-model" if kvm else None),
        devices=(
            Disk(source=disk_path),
            FileSerial(path=str(console_log_path(console_dir, spec.vm_id))),
            GuestAgentChannel(),
            VncGraphics(password=spec.vnc_password),
            Video(),
            Tablet(),
            Rng(),
        ),
    )
