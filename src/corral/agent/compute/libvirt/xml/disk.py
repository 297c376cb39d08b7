"""``<disk>``: a virtio disk backed by a host file or a network volume (NFS, iSCSI, RBD)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from typing import Literal

from corral.agent.compute.libvirt.xml.util import sub
from corral.api.errors import InvalidInput

USER_ALIAS = re.compile(r"^ua-[A-Za-z0-9_-]+$")
"""What libvirt accepts as a user-chosen device alias (it refuses anything else)."""


@dataclass(frozen=True)
class NetworkSource:
    """``<source protocol=… name=…><host name=… port=…/>…</source>``: a disk QEMU opens itself
    over the network (``nfs``: ``/export/dir/file``; ``iscsi``: ``<iqn>/<lun>``; ``rbd``:
    ``<pool>/<image>``).

    NFS (libvirt 9): ``<host>`` takes no port (libvirt refuses one) and ``<identity>`` is
    required; QEMU then talks to the server as root, as the agent did when it made the file (else
    it would be libvirt-qemu's uid, denied the 0600 file)."""

    protocol: Literal["nfs", "iscsi", "rbd"]
    name: str
    hosts: tuple[tuple[str, int], ...] = ()

    def element(self) -> ET.Element:
        source = ET.Element("source", protocol=self.protocol, name=self.name)
        for host, port in self.hosts:
            if self.protocol == "nfs":
                sub(source, "host", name=host)
            else:
                sub(source, "host", name=host, port=str(port))
        if self.protocol == "nfs":
            sub(source, "identity", user="root", group="root")
        return source


@dataclass(frozen=True)
class DiskAuthRef:
    """``<auth username=…><secret type=… usage=…/></auth>``: the credentials of a network disk,
    held in the libvirt secret whose usage is ``usage``."""

    type: Literal["ceph", "iscsi"]
    username: str
    usage: str

    def element(self) -> ET.Element:
        auth = ET.Element("auth", username=self.username)
        sub(auth, "secret", type=self.type, usage=self.usage)
        return auth


@dataclass(frozen=True)
class IoTune:
    """``<iotune>``: per-second limits; a 0 field is unlimited and left out."""

    total_iops_sec: int = 0
    read_iops_sec: int = 0
    write_iops_sec: int = 0
    total_bytes_sec: int = 0
    read_bytes_sec: int = 0
    write_bytes_sec: int = 0

    @property
    def unlimited(self) -> bool:
        return not any(self.limits().values())

    def limits(self) -> dict[str, int]:
        """Every field by name, zeros included (``virDomainSetBlockIoTune`` parameters)."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    def element(self) -> ET.Element:
        iotune = ET.Element("iotune")
        for name, value in self.limits().items():
            if value:
                sub(iotune, name, str(value))
        return iotune


@dataclass(frozen=True)
class Disk:
    """A disk. ``source`` is a host path (``type='file'``) or a ``NetworkSource``
    (``type='network'``, with ``auth`` if the server wants credentials); None only for a
    CD-ROM drive without a medium (an empty tray: ``type='file'`` without ``<source>``).

    ``cache`` None keeps QEMU's default (writeback); ``none`` (O_DIRECT) is refused by some file
    systems, so it is never chosen implicitly, except for ``shareable`` disks: libvirt requires
    those to be raw and uses ``cache='none'`` for them (several guests write the same blocks; no
    host page cache may sit between them). ``serial`` is what the guest sees
    (``/dev/disk/by-id/virtio-<serial>``, at most 20 characters for virtio); ``alias`` must be a
    user alias (``ua-…``). ``InvalidInput`` (from ``element``) for combinations libvirt refuses.
    """

    source: str | NetworkSource | None
    target: str = "vda"
    bus: Literal["virtio", "sata", "scsi", "ide"] = "virtio"
    format: Literal["qcow2", "raw"] = "qcow2"
    device: Literal["disk", "cdrom"] = "disk"
    readonly: bool = False
    cache: Literal["writeback", "writethrough", "none", "directsync", "unsafe"] | None = None
    discard: Literal["unmap", "ignore"] | None = "unmap"
    auth: DiskAuthRef | None = None
    serial: str | None = None
    alias: str | None = None
    shareable: bool = False
    iotune: IoTune | None = None

    def element(self) -> ET.Element:
        self._check()
        network = isinstance(self.source, NetworkSource)
        disk = ET.Element("disk", type="network" if network else "file", device=self.device)
        driver = sub(disk, "driver", name="qemu", type=self.format)
        cache = self.cache if self.cache is not None or not self.shareable else "none"
        if cache is not None:
            driver.set("cache", cache)
        if self.discard is not None and not self.readonly:
            driver.set("discard", self.discard)
        if isinstance(self.source, NetworkSource):
            disk.append(self.source.element())
        elif self.source is not None:
            sub(disk, "source", file=self.source)
        if self.auth is not None:
            disk.append(self.auth.element())
        sub(disk, "target", dev=self.target, bus=self.bus)
        if self.iotune is not None and not self.iotune.unlimited:
            disk.append(self.iotune.element())
        if self.readonly:
            sub(disk, "readonly")
        if self.shareable:
            sub(disk, "shareable")
        if self.serial is not None:
            sub(disk, "serial", self.serial)
        if self.alias is not None:
            sub(disk, "alias", name=self.alias)
        return disk

    def _check(self) -> None:
        if self.shareable and self.format != "raw" and not self.readonly:
            raise InvalidInput(
                "a shareable disk must be raw (QEMU cannot share a qcow2 image)",
                target=self.target,
                format=self.format,
            )
        if self.alias is not None and not USER_ALIAS.match(self.alias):
            raise InvalidInput("invalid libvirt device alias", alias=self.alias)
        if self.source is None and self.device != "cdrom":
            raise InvalidInput("only a CD-ROM drive may be empty", target=self.target)
        if self.auth is not None and not isinstance(self.source, NetworkSource):
            raise InvalidInput("only network disks take credentials", target=self.target)
