"""Compose the domain of a Corral VM from its ``VmSpec``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from corral.agent.compute.libvirt.naming import domain_name, domain_uuid
from corral.agent.compute.libvirt.xml.channel import GuestAgentChannel
from corral.agent.compute.libvirt.xml.cpu import Cpu, Vcpu
from corral.agent.compute.libvirt.xml.disk import (
    USER_ALIAS,
    Disk,
    DiskAuthRef,
    IoTune,
    NetworkSource,
)
from corral.agent.compute.libvirt.xml.domain import Domain
from corral.agent.compute.libvirt.xml.features import Features
from corral.agent.compute.libvirt.xml.graphics import VncGraphics
from corral.agent.compute.libvirt.xml.input import Tablet
from corral.agent.compute.libvirt.xml.memory import Memory
from corral.agent.compute.libvirt.xml.metadata import VmMetadata
from corral.agent.compute.libvirt.xml.nic import nic_interface
from corral.agent.compute.libvirt.xml.os import Os
from corral.agent.compute.libvirt.xml.parse import CDROM_ALIAS as CDROM_ALIAS
from corral.agent.compute.libvirt.xml.parse import CONFIG_DRIVE_ALIAS as CONFIG_DRIVE_ALIAS
from corral.agent.compute.libvirt.xml.parse import VOLUME_ALIAS_PREFIX
from corral.agent.compute.libvirt.xml.rng import Rng
from corral.agent.compute.libvirt.xml.serial import FileSerial
from corral.agent.compute.libvirt.xml.video import Video
from corral.agent.storage.backend import DiskSource
from corral.api.agent import DataDisk, VmSpec
from corral.api.errors import InvalidInput
from corral.api.volumes import VolumeQos

SERIAL_CHARS = 20
"""virtio-blk serials hold at most 20 characters."""


def console_log_path(console_dir: Path, vm_id: str) -> Path:
    """Where the serial console of ``vm_id`` is written."""
    return console_dir / f"{vm_id}.log"


def disk_alias(volume_id: str) -> str:
    """The user alias of a data volume's disk (``ua-vol-<volume_id>``): how the driver finds it
    again. ``InvalidInput`` for ids libvirt cannot carry in an alias."""
    alias = VOLUME_ALIAS_PREFIX + volume_id
    if not volume_id or not USER_ALIAS.match(alias):
        raise InvalidInput("volume id is not usable in a libvirt device alias", volume_id=volume_id)
    return alias


def disk_serial(volume_id: str) -> str:
    """The serial the guest sees: the first 20 characters of the volume id."""
    return volume_id[:SERIAL_CHARS]


def secret_usage(pool_id: str) -> str:
    """The usage name of the libvirt secret holding a pool's credentials."""
    return f"corral-pool-{pool_id}"


def iotune(qos: VolumeQos) -> IoTune:
    return IoTune(**qos.model_dump())


def data_disk(disk: DataDisk, source: DiskSource) -> Disk:
    """The ``<disk>`` of a data volume: virtio ``disk.device``, serial and alias from the volume
    id, ``<shareable/>``, ``<iotune>`` from its QoS and the source (file or network, with the
    pool's secret). ``InvalidInput`` for a source the XML cannot express (e.g. shareable qcow2)."""
    volume_id = disk.volume.volume_id
    where: str | NetworkSource
    if source.kind == "file":
        where = source.path
    elif source.protocol:
        where = NetworkSource(protocol=source.protocol, name=source.name, hosts=source.hosts)
    else:
        raise InvalidInput("network disk source without a protocol", volume_id=volume_id)
    auth = None
    if source.auth is not None:
        a = source.auth
        auth = DiskAuthRef(type=a.type, username=a.username, usage=secret_usage(a.pool_id))
    return Disk(
        source=where,
        target=disk.device,
        format=source.format,
        auth=auth,
        serial=disk_serial(volume_id),
        alias=disk_alias(volume_id),
        shareable=disk.shareable,
        iotune=iotune(disk.qos),
    )


def cdrom_target(machine: str) -> tuple[Literal["ide", "sata"], str]:
    """(bus, device) of the CD-ROM drive: IDE ``hdc`` on ``pc`` machines (guests need no AHCI
    driver), SATA ``sdc`` on q35, which has no IDE controller."""
    return ("sata", "sdc") if "q35" in machine else ("ide", "hdc")


def _optical(path: str | None, place: tuple[Literal["ide", "sata"], str], alias: str) -> Disk:
    bus, target = place
    return Disk(source=path, target=target, bus=bus, format="raw", device="cdrom",
                readonly=True, alias=alias)  # fmt: skip


def cdrom_drive(path: str | None, machine: str = "pc") -> Disk:
    """The read-only CD-ROM drive (alias ``ua-cdrom``) holding the raw ISO file ``path``, or
    with an empty tray (None): a medium can be inserted later, also while the VM runs."""
    return _optical(path, cdrom_target(machine), CDROM_ALIAS)


def config_drive_target(machine: str) -> tuple[Literal["ide", "sata"], str]:
    """(bus, device) of the config drive: on the CD-ROM drive's bus, the next unit (IDE
    ``hdd``, the secondary slave, on ``pc``; SATA ``sdd`` on q35), so the guest sees it after
    the CD-ROM drive (Linux: ``/dev/sr1``)."""
    return ("sata", "sdd") if "q35" in machine else ("ide", "hdd")


def config_drive(path: str, machine: str = "pc") -> Disk:
    """The read-only CD-ROM drive (alias ``ua-configdrive``) holding the config drive ISO file
    ``path`` (see ``corral.agent.configdrive``)."""
    return _optical(path, config_drive_target(machine), CONFIG_DRIVE_ALIAS)


def vm_domain(
    spec: VmSpec,
    *,
    disk_path: str | None,
    console_dir: Path,
    kvm: bool,
    machine: str = "pc",
    disks: Sequence[tuple[DataDisk, DiskSource]] = (),
    cdrom: str | None = None,
    config_iso: str | None = None,
) -> Domain:
    """The domain of ``spec``: the root disk ``vda`` (the qcow2 file ``disk_path``, or the data
    disk with device ``vda`` — a root volume — when ``disk_path`` is None), then the data
    ``disks`` (see ``data_disk``) in order, the CD-ROM drive (``cdrom_drive``: the ISO file
    ``cdrom`` or empty), the config drive when ``config_iso`` (its ISO file) is given
    (``config_drive``; not in the boot order), the NICs of ``spec.nics`` in order (``nic.nic_interface``: taps on
    Open vSwitch), booting from ``spec.boot`` in order (``hd``: ``vda``), serial console to
    ``<console_dir>/<vm_id>.log``, VNC on the loopback, guest agent channel, virtio-rng.
    ``kvm`` chooses hardware virtualization (host-model CPU) over TCG (QEMU's default CPU).
    ``InvalidInput`` if two data disks share a device or a volume."""
    devices = [disk.device for disk, _ in disks]
    volumes = [disk.volume.volume_id for disk, _ in disks]
    if len(set(devices)) != len(devices) or len(set(volumes)) != len(volumes):
        raise InvalidInput("data disks must have distinct devices and volumes", vm_id=spec.vm_id)
    if (disk_path is None) != ("vda" in devices):
        raise InvalidInput(
            "a VM has one root disk: a host-local disk_path or a volume on vda", vm_id=spec.vm_id
        )
    ordered = sorted(disks, key=lambda d: d[0].device != "vda")  # the root volume first
    root = () if disk_path is None else (Disk(source=disk_path),)
    return Domain(
        type="kvm" if kvm else "qemu",
        name=domain_name(spec.vm_id),
        uuid=domain_uuid(spec.vm_id),
        title=spec.name,
        metadata=VmMetadata(vm_id=spec.vm_id, name=spec.name),
        memory=Memory(spec.memory_mb),
        vcpu=Vcpu(spec.cpus),
        os=Os(machine=machine, boot=tuple(dict.fromkeys(spec.boot))),
        features=Features(acpi=True, apic=True),
        cpu=Cpu(cores=spec.cpus, mode="host-model" if kvm else None),
        devices=(
            *root,
            *(data_disk(disk, source) for disk, source in ordered),
            cdrom_drive(cdrom, machine),
            *(() if config_iso is None else (config_drive(config_iso, machine),)),
            *(nic_interface(nic) for nic in spec.nics),
            FileSerial(path=str(console_log_path(console_dir, spec.vm_id))),
            GuestAgentChannel(),
            VncGraphics(password=spec.vnc_password),
            Video(),
            Tablet(),
            Rng(),
        ),
    )
