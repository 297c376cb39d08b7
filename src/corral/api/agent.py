"""The manager-agent protocol: tasks the server sends, reports the agent sends back.

Server -> agent (bearer: the host token issued at attach), under the agent's base URL:
    POST /v1/enroll           EnrollRequest -> EnrollChallenge (no bearer while unclaimed)
    POST /v1/enroll/complete  EnrollComplete -> AttachResponse (same enrollment token)
    POST /v1/detach           -> Detached (the host was removed: forget the server)
    POST /v1/attach           AttachRequest -> AttachResponse (first attach claims an unclaimed agent)
    GET  /v1/facts            -> HostFacts
    POST /v1/tasks            AgentTask -> TaskStatus (final if done within a short wait, else running)
    GET  /v1/tasks/{task_id}  -> TaskStatus
    GET  /v1/vms              -> list[VmReport]
Agent -> server (same bearer), under the server URL:
    POST /api/v1/agent/heartbeat        Heartbeat (every 2 s)
    POST /api/v1/agent/tasks/{task_id}  TaskStatus (callback of a long task)
    POST /api/v1/agent/events           VmEvents (lifecycle changes seen by the driver)
    GET  /api/v1/agent/images/{id}/data the image bytes

Enrollment (``host add``): the server fetches the agent's bootstrap (self-signed) certificate and
pins it for the two enroll calls; the agent answers ``enroll`` with a CSR for a new key, the server
signs it with the cluster CA and ``enroll/complete`` delivers certificate, CA and host token. From
then on the agent presents that certificate to clients asking for ``<host id>.host.corral.invalid``
(SNI) and the server verifies it against the cluster CA and that name.

Task ids are chosen by the server and are idempotency keys: a duplicate id returns the first answer
and never runs the task twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from corral.api.common import Model
from corral.api.errors import ErrorBody
from corral.api.host_network import DhcpSegment, Segment, Uplink
from corral.api.hosts import HostFacts
from corral.api.vms import PowerState
from corral.api.volumes import VolumeQos


class AttachRequest(Model):
    host_id: str
    token: str = Field(min_length=32)
    server_url: str
    server_cert_pem: str | None = Field(None, description="pin: the server's API certificate")


class AttachResponse(Model):
    facts: HostFacts
    agent_version: str


class EnrollRequest(Model):
    """Step 1 of enrollment: the agent makes a new key and answers with a CSR for it."""

    host_id: str = Field(min_length=1, max_length=200)
    enrollment_token: str = Field(min_length=32, description="one-time, also sent in step 2")
    server_url: str
    server_cert_pem: str | None = Field(None, description="pin: the server's API certificate")


class EnrollChallenge(Model):
    csr_pem: str


class EnrollComplete(Model):
    """Step 2: the signed certificate, the cluster CA and the host's API token."""

    enrollment_token: str = Field(min_length=32)
    host_token: str = Field(min_length=32)
    cert_pem: str
    ca_pem: str


class Detached(Model):
    detached: bool = True


class ImageRef(Model):
    """Where an agent fetches an image from and how it checks it."""

    id: str
    sha256: str
    size_bytes: int
    virtual_size_bytes: int
    format: str
    download_path: str = Field(description="path on the server, relative to the server URL")


class PoolRef(Model):
    """A storage pool as an agent needs it to reach volumes. ``credentials`` are the unsealed
    secret (cephx key, CHAP ``user:secret``): sent over the agent's TLS link, kept by the agent
    only in 0600 files, never logged."""

    id: str
    type: Literal["local", "nfs", "iscsi", "rbd"]
    settings: dict[str, Any]
    credentials: str | None = None


def pools_digest(pools: Iterable[PoolRef]) -> str:
    """What identifies a set of pools (``PoolsSync``, ``Heartbeat.pools_digest``): SHA-256 (hex)
    of the canonical JSON of each pool's id, type, settings and credentials, sorted by id. The
    server and the agent both compute it with this function, so they agree; the credentials are
    part of the input (a rotation changes the digest), the digest itself is never logged."""
    canonical = [
        [p.id, p.type, p.settings, p.credentials] for p in sorted(pools, key=lambda p: p.id)
    ]
    data = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(data.encode()).hexdigest()


class PoolReport(Model):
    """What one host sees of one pool (GiB). ``ok`` false: the pool could not be prepared or
    measured here, ``error`` says why (never with credentials); the sizes are then 0."""

    pool_id: str
    ok: bool
    total_gb: float = 0
    free_gb: float = 0
    error: str | None = None
    luns: list[tuple[int, int]] | None = Field(
        None, description="iscsi pools: the target's LUNs as (LUN number, size in bytes)"
    )


class VolumeRef(Model):
    """One volume on a pool. ``name`` is where it is on the pool, chosen by the server: a file
    name (local, nfs), a LUN number (iscsi) or an RBD image name."""

    volume_id: str
    pool: PoolRef
    name: str
    size_gb: int
    format: Literal["qcow2", "raw"] = "qcow2"


class DataDisk(Model):
    """A volume in a VM's definition: virtio disk ``device`` (``vda``: the VM's root volume,
    which then replaces the host-local root disk; ``vdb``…: data volumes), serial = the first
    20 characters of the volume id (``/dev/disk/by-id/virtio-<serial>`` in the guest)."""

    volume: VolumeRef
    device: str = Field(pattern=r"^vd[a-z]$")
    shareable: bool = False
    qos: VolumeQos = Field(default_factory=VolumeQos)


def has_root_volume(spec: VmSpec) -> bool:
    """Whether the VM's root disk is a volume (a data disk ``vda``), not host-local."""
    return any(d.device == "vda" for d in spec.disks)


NicModel = Literal["virtio", "e1000", "rtl8139"]
"""The NIC models a guest can get: virtio (paravirtual, the default), e1000 and rtl8139 for
legacy guests without virtio drivers."""

NIC_PORT_PREFIX = "cn-"
"""Prefix of the OVS port (host tap) of every Corral NIC."""
_NIC_INTERFACE_NS = uuid.UUID("2f0c9a57-8d1e-4b3a-9c6d-636f7272616e")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = r"^[A-Za-z0-9_.-]{1,15}$"
_LIBVIRT_GENERATED = ("vnet", "vif", "macvtap", "macvlan")
"""Tap name prefixes libvirt treats as its own: a NIC's ``port`` never starts with one."""


def nic_port_name(nic_id: str) -> str:
    """The OVS port (= host tap) name the server gives a NIC: ``cn-`` and the first 11
    characters of its id (15 characters at most: Linux interface names hold 15)."""
    return NIC_PORT_PREFIX + nic_id[:11]


def nic_interface_id(nic_id: str) -> str:
    """The NIC's ``external_ids:iface-id`` on Open vSwitch (libvirt's virtualport
    ``interfaceid``): a UUID derived from the NIC id, the same on every host, so the server
    (the network controller) can find the NIC's port wherever its VM runs."""
    return str(uuid.uuid5(_NIC_INTERFACE_NS, nic_id))


def kbps_to_libvirt(kbps: int) -> int:
    """A rate in kbit/s (1000 bit/s) as libvirt's ``<bandwidth>`` ``average``/``peak`` unit,
    rounded up: kilobytes/s of 1000 bytes (8 kbit/s), as libvirt 9.0 applies it. Verified on
    Open vSwitch: ``average=50`` became an HTB class of 400 kbit/s (measured 378 kbit/s into
    the guest) and ``ingress_policing_rate=400``; ``average=2000``: 16000 kbit/s. Not KiB/s."""
    return max(1, math.ceil(kbps / 8))


class NicSpec(Model):
    """A VM's network interface: a tap ``port`` on the Open vSwitch ``bridge`` of the host.

    ``mac``: a unicast, locally administered address (first octet ``x2``, ``x6``, ``xA`` or
    ``xE``, e.g. ``02:…`` as the server generates them), stored in lower case. ``tag``: the
    access VLAN of the port on the bridge (None: no tag, which makes the OVS port a trunk of
    every VLAN). ``port``: the OVS port and host tap name (at most 15 characters, never
    ``vnet…``/``vif…``/``macvtap…``/``macvlan…``, which libvirt takes as its own; default
    ``nic_port_name(nic_id)``). ``mtu``: the tap's MTU, also told to virtio guests (None:
    1500). ``inbound_kbps``/``outbound_kbps``: limits in kbit/s (1000 bit/s) of traffic into /
    out of the guest (libvirt ``<bandwidth>``, see ``kbps_to_libvirt``; None: unlimited). With
    the userspace datapath only the inbound limit holds (an HTB qdisc on the tap); libvirt
    polices outbound traffic with OVS ``ingress_policing_rate`` (tc ingress on the tap), which
    the userspace datapath does not enforce (measured: 24 Mbit/s out of a guest limited to
    800 kbit/s; with the kernel datapath tc policing should apply, not verifiable here)."""

    nic_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    mac: str
    model: NicModel = "virtio"
    bridge: str = Field("br-int", pattern=_IFNAME)
    tag: int | None = Field(None, ge=1, le=4094, description="access VLAN on the bridge")
    port: str = Field("", description="OVS port / tap name; default nic_port_name(nic_id)")
    mtu: int | None = Field(None, ge=68, le=65535)
    inbound_kbps: int | None = Field(None, ge=8, le=100_000_000, description="into the guest")
    outbound_kbps: int | None = Field(None, ge=8, le=100_000_000, description="from the guest")

    @field_validator("mac")
    @classmethod
    def _unicast_local_mac(cls, mac: str) -> str:
        mac = mac.lower()
        if not _MAC.match(mac):
            raise ValueError("a MAC address is six hex octets separated by ':'")
        if int(mac[:2], 16) & 0b11 != 0b10:
            raise ValueError("the MAC address must be unicast and locally administered (02:…)")
        return mac

    @model_validator(mode="after")
    def _port(self) -> NicSpec:
        if not self.port:
            self.port = nic_port_name(self.nic_id)
        if not re.match(_IFNAME, self.port) or self.port.startswith(_LIBVIRT_GENERATED):
            raise ValueError(
                "port: 1-15 letters, digits, '_', '.', '-', not starting with vnet, vif,"
                " macvtap or macvlan"
            )
        return self


def _distinct_nics(nics: list[NicSpec]) -> list[NicSpec]:
    for what in ("nic_id", "mac", "port"):
        values = [getattr(n, what) for n in nics]
        if len(set(values)) != len(values):
            raise ValueError(f"the NICs of a VM must have distinct {what}s")
    return nics


BootDevice = Literal["cdrom", "hd"]
"""What a VM boots from: its CD-ROM drive or its root disk."""


def _boot_hd() -> list[BootDevice]:
    return ["hd"]


class ConfigDrive(Model):
    """A NoCloud config drive: an ISO 9660 image (volume label ``cidata``) with the files
    ``meta-data``, ``network-config`` (cloud-init network configuration version 2, when given)
    and ``user-data`` (empty when not given: NoCloud ignores a seed without it), attached to the
    VM as a second, read-only CD-ROM. cloud-init
    (and similar agents) in the guest configure the instance from it at boot; a guest without
    one ignores it."""

    meta_data: str = Field(max_length=65_536)
    network_config: str | None = Field(None, max_length=262_144)
    user_data: str | None = Field(None, max_length=65_536)


class VmSpec(Model):
    """Everything a host needs to define a VM. The agent keeps a JSON copy of it on disk."""

    vm_id: str
    name: str
    cpus: int
    memory_mb: int
    disk_gb: int
    vnc_password: str
    disks: list[DataDisk] = Field(default_factory=list, description="data volumes, in order")
    cdrom: ImageRef | None = Field(None, description="the ISO in the CD-ROM drive (None: empty)")
    boot: list[BootDevice] = Field(
        default_factory=_boot_hd, min_length=1, max_length=2, description="boot order"
    )
    nics: list[NicSpec] = Field(
        default_factory=list, max_length=16, description="network interfaces, in order"
    )
    config_drive: ConfigDrive | None = Field(
        None, description="a NoCloud config drive (None: none)"
    )

    @field_validator("nics")
    @classmethod
    def _nics_distinct(cls, nics: list[NicSpec]) -> list[NicSpec]:
        return _distinct_nics(nics)


class DiskCreate(Model):
    kind: Literal["disk.create"] = "disk.create"
    vm_id: str
    image: ImageRef
    size_gb: int


class DiskDelete(Model):
    kind: Literal["disk.delete"] = "disk.delete"
    vm_id: str


class DiskFreeze(Model):
    """Make the stopped VM's root disk the read-only layer ``layer`` (in the host's image cache)
    and put the VM on a new empty overlay of it: constant time, for linked clones. Idempotent."""

    kind: Literal["disk.freeze"] = "disk.freeze"
    vm_id: str
    layer: ImageRef


class DiskThaw(Model):
    """Undo ``disk.freeze`` (the VM's overlay on ``layer`` dropped, the layer made its disk
    again). Only before anything else uses the layer. Nothing frozen: success."""

    kind: Literal["disk.thaw"] = "disk.thaw"
    vm_id: str
    layer: ImageRef


class DiskFlatten(Model):
    """Copy everything the VM's root disk reads from its backing files into it, so it stands
    alone (a live block pull while the VM runs, ``qemu-img rebase -b ''`` when it does not).
    Idempotent."""

    kind: Literal["disk.flatten"] = "disk.flatten"
    vm_id: str


class VmDefine(Model):
    """Define the VM, or redefine it with a new spec (resize). Idempotent."""

    kind: Literal["vm.define"] = "vm.define"
    spec: VmSpec


class VmUndefine(Model):
    """Remove the VM's definition, powering it off first if needed. Absent is success."""

    kind: Literal["vm.undefine"] = "vm.undefine"
    vm_id: str


class VmPower(Model):
    kind: Literal["vm.start", "vm.stop", "vm.reboot", "vm.pause", "vm.resume"]
    vm_id: str
    force: bool = False
    timeout: float = 60.0


class VmCdrom(Model):
    """Put ``image`` (an ISO, cached first) in the VM's CD-ROM drive, or eject the medium
    (None): live if the VM runs, and in its definition and stored spec. Already so is success."""

    kind: Literal["vm.cdrom"] = "vm.cdrom"
    vm_id: str
    image: ImageRef | None = None


class VolumeCreateTask(Model):
    """Create the volume on its pool (blank, ``size_gb``). Existing is success."""

    kind: Literal["volume.create"] = "volume.create"
    volume: VolumeRef
    image: ImageRef | None = Field(
        None,
        description="the volume starts as a copy of this image (qcow2 or raw, not iso): fetched"
        " and checked into the host's image cache first, then converted into the volume;"
        " ``size_gb`` is at least the image's virtual size",
    )


class VolumeDeleteTask(Model):
    """Delete the volume from its pool. Absent is success; attached to a VM defined here is
    ``InvalidState``."""

    kind: Literal["volume.delete"] = "volume.delete"
    volume: VolumeRef


class VolumeCopyTask(Model):
    """Make ``target`` (the same volume on another pool, not yet there) a copy of ``source``'s
    data (its active file, chain flattened), converted to ``target.format``. Nothing may write
    ``source`` meanwhile. Existing target: success (kept as it is). A failed copy leaves no
    target."""

    kind: Literal["volume.copy"] = "volume.copy"
    source: VolumeRef
    target: VolumeRef


class VolumeAttachTask(Model):
    """Add the disk to the VM's definition and hot-plug it if the VM runs. Attached is success."""

    kind: Literal["volume.attach"] = "volume.attach"
    vm_id: str
    disk: DataDisk


class VolumeDetachTask(Model):
    """Hot-unplug the volume (waiting up to ``timeout`` s for the guest to release it) and remove
    it from the VM's definition. Not attached is success."""

    kind: Literal["volume.detach"] = "volume.detach"
    vm_id: str
    volume_id: str
    timeout: float = Field(30.0, ge=0, le=600)


class VolumeResizeTask(Model):
    """Grow the volume to ``size_gb``: live (block resize) when ``vm_id`` runs it, else on the
    pool. Already that size or larger is success."""

    kind: Literal["volume.resize"] = "volume.resize"
    volume: VolumeRef
    size_gb: int
    vm_id: str | None = None


class VolumeQosTask(Model):
    """Set the I/O limits of an attached volume (live if the VM runs, and in its definition)."""

    kind: Literal["volume.qos"] = "volume.qos"
    vm_id: str
    volume_id: str
    qos: VolumeQos


class NicAttachTask(Model):
    """Add the NIC to the VM's definition and hot-plug it if the VM runs (live and persistent),
    then record it in the stored spec. Attached already (same NIC id, same settings) is
    success; the same id with other settings, or another NIC with its MAC or port, is
    ``InvalidState`` (detach first). Result ``{}``."""

    kind: Literal["nic.attach"] = "nic.attach"
    vm_id: str
    nic: NicSpec


class NicDetachTask(Model):
    """Hot-unplug the NIC (waiting up to ``timeout`` s for the guest to release it) and remove
    it from the VM's definition and stored spec. Not attached is success. Result ``{}``."""

    kind: Literal["nic.detach"] = "nic.detach"
    vm_id: str
    nic_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    timeout: float = Field(30.0, ge=0, le=600)


class SnapshotCreateTask(Model):
    """Freeze the volume's active file ``volume.name`` as a snapshot and continue on a new,
    empty qcow2 overlay ``new_name`` backed by it (in the same place on the pool). When ``vm_id``
    runs the volume: a live disk-only external snapshot (``quiesce``: through the guest agent,
    failing if it does not answer); otherwise ``qemu-img create``, and the VM's definition (if
    ``vm_id`` is given) is switched to ``new_name``. Done already (``new_name`` is the disk's
    file) is success. Result: ``{"live": bool, "frozen_bytes": int | None}`` (what the frozen
    file takes on the pool; None: not measured)."""

    kind: Literal["snapshot.create"] = "snapshot.create"
    volume: VolumeRef
    new_name: str
    vm_id: str | None = None
    quiesce: bool = False


class SnapshotRevertTask(Model):
    """Make ``new_name`` (a new empty overlay backed by the snapshot file ``target``) the
    volume's active file and delete the old active file ``volume.name``; the VM ``vm_id`` (if
    given) must be stopped and its definition is switched. Done already is success."""

    kind: Literal["snapshot.revert"] = "snapshot.revert"
    volume: VolumeRef
    target: str
    new_name: str
    vm_id: str | None = None


class SnapshotRebaseTask(Model):
    """Rebase the file ``name`` of the volume's pool onto ``backing`` (None: standalone),
    copying the data it got from the layers in between, so that what it holds for a reader
    does not change. ``live``: ``name`` is the active file of the running VM ``vm_id`` (a libvirt
    block pull with ``backing`` as base); else ``name`` must not be open by any VM (``qemu-img
    rebase``). Already on ``backing`` is success. Result: ``{"live": bool, "bytes": int | None}``
    (what ``name`` takes on the pool afterwards; None: not measured)."""

    kind: Literal["snapshot.rebase"] = "snapshot.rebase"
    volume: VolumeRef
    name: str
    backing: str | None
    vm_id: str | None = None
    live: bool = False


class SnapshotDeleteFileTask(Model):
    """Delete the file ``name`` (a merged snapshot's image) from the volume's pool. Absent is
    success. The server sends it only once no other file has ``name`` as backing."""

    kind: Literal["snapshot.delete"] = "snapshot.delete"
    volume: VolumeRef
    name: str


class RbdSnapshotTask(Model):
    """A Ceph snapshot of an rbd volume's image (Ceph's own copy-on-write): ``create`` it
    (existing: success), ``rollback`` the image to it (the image's data becomes the snapshot's;
    no client may have the image open: its VM is stopped), ``remove`` it (absent: success),
    ``clone`` it into the new volume ``target`` (same pool; a copy-on-write clone). Result of
    ``create``: ``{"bytes": int | None}`` (``rbd du`` of the snapshot; None: not measured); of
    ``remove``: ``{"sizes": {snap: bytes}}`` (every remaining snapshot, measured again; empty
    when that failed)."""

    kind: Literal["rbd.snapshot"] = "rbd.snapshot"
    op: Literal["create", "rollback", "remove", "clone"]
    volume: VolumeRef
    snap: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    target: VolumeRef | None = Field(None, description="clone: the new volume")


class PoolImageForget(Model):
    """Remove the pool's own copy of an image (the base its volumes are made on: ``<pool>/
    images/<id>.*`` on local, ``corral-image-<id>.qcow2`` on nfs, ``corral-image-<id>`` on
    rbd). Absent: success. The server sends it once no volume of the pool uses the copy; rbd
    refuses while clones exist (``reason="in_use"``)."""

    kind: Literal["pool.image.forget"] = "pool.image.forget"
    pool: PoolRef
    image_id: str


class ImageCaptureTask(Model):
    """Copy a disk into a standalone qcow2 image (its backing chain flattened), send it to the
    server's image store (``PUT upload_path``) and keep it in this host's image cache. Exactly
    one source: ``vm_id`` (the VM's root disk; while the VM runs, a live block copy: a
    consistent copy of that moment) or ``volume`` (its file
    ``volume.name``: the active file, which nothing may write meanwhile, or a snapshot file).
    Result: ``{"size_bytes": int, "sha256": str}`` of the bytes sent. ``publish`` False: the
    copy (fsync'd) only goes into this host's image cache, nothing is sent (``upload_path`` is
    unused; ``ImagePublishTask`` sends it later) and the result is ``{"size_bytes": int,
    "sha256": None}``."""

    kind: Literal["image.capture"] = "image.capture"
    image_id: str
    upload_path: str = Field(description="path on the server, relative to the server URL")
    vm_id: str | None = None
    volume: VolumeRef | None = None
    publish: bool = Field(True, description="False: keep the copy in the image cache only")

    @model_validator(mode="after")
    def _one_source(self) -> ImageCaptureTask:
        if (self.vm_id is None) == (self.volume is None):
            raise ValueError("give vm_id or volume")
        return self


class ImagePublishTask(Model):
    """Send the copy of the image ``image_id`` in this host's image cache (kept there by an
    ``ImageCaptureTask`` with ``publish`` False; ``format``: the cached file's format) to the
    server's image store (``PUT upload_path``), hashed as it is read. Safe to run again (the
    same bytes are sent again). Result: ``{"size_bytes": int, "sha256": str}`` of the bytes
    sent. ``NotFound`` (context ``image_id``) if the image is not in this host's cache."""

    kind: Literal["image.publish"] = "image.publish"
    image_id: str
    upload_path: str = Field(description="path on the server, relative to the server URL")
    format: Literal["qcow2", "raw"] = "qcow2"


class VmSnapshotDisk(Model):
    """One disk of a whole-VM snapshot. A file volume (``new_name``): its active file
    ``volume.name`` is frozen and the disk continues on the new empty overlay ``new_name`` (as
    ``SnapshotCreateTask``); an rbd volume (``ceph_snap``): a Ceph snapshot of its image."""

    volume: VolumeRef
    new_name: str | None = None
    ceph_snap: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @model_validator(mode="after")
    def _one_kind(self) -> VmSnapshotDisk:
        if (self.new_name is None) == (self.ceph_snap is None):
            raise ValueError("give new_name (file volume) or ceph_snap (rbd volume)")
        return self


class VmSnapshotTask(Model):
    """Snapshot every listed disk of the VM ``vm_id`` at one moment (its other disks, e.g. a
    host-local root disk, are left alone). Running or paused VM: the guest's file systems are
    frozen through the guest agent when ``quiesce`` and it answers (else the snapshot is
    crash-consistent; never with ``memory``, whose state holds what the disks lack: a guest
    restored from a frozen state would stay frozen), the VM is paused while the rbd snapshots
    are taken and the file disks switched to their overlays (one libvirt external snapshot for
    all of them), its memory saved to the agent's memory file ``memory`` when given, then it
    runs on as before. Stopped VM: the overlays are made and the VM redefined on them;
    ``memory`` must be None. Done already (every file disk on ``new_name``, every Ceph
    snapshot there) is success. Result: ``{"quiesced": bool, "memory_bytes": int | None,
    "frozen_bytes": {volume_id: int | None}}`` (what each frozen file or Ceph snapshot takes on
    its pool; None: not measured)."""

    kind: Literal["vm.snapshot"] = "vm.snapshot"
    vm_id: str
    disks: list[VmSnapshotDisk] = Field(min_length=1, max_length=26)
    quiesce: bool = True
    memory: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="memory file name (in the agent's data directory); None: disks only",
    )


class VmMemoryTask(Model):
    """The memory state files of whole-VM snapshots (host-local, ``<data>/memory/<name>.mem``).
    ``restore``: start the stopped VM ``vm_id`` from the memory state ``name`` on the disk files
    of its current definition (the server has reverted its disks to the snapshot first; its
    disks must be those it had then, other devices are as they were saved); the VM runs
    afterwards (running already: success). ``delete``: remove the file (absent: success)."""

    kind: Literal["vm.memory"] = "vm.memory"
    op: Literal["restore", "delete"]
    vm_id: str
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")


class PoolsSync(Model):
    """Every pool this host should use: the agent stores them (0600, they hold credentials),
    forgets the others, prepares each (local: its directory; nfs: the ``corral-volumes``
    directory; rbd: nothing) and answers ``{"pools": [PoolReport...], "digest": str}`` (the
    ``pools_digest`` it now holds). A pool that cannot be prepared or measured is reported
    ``ok=false``: it does not fail the task."""

    kind: Literal["pools.sync"] = "pools.sync"
    pools: list[PoolRef] = Field(default_factory=list, max_length=10_000)


class PortMeter(Model):
    """An OpenFlow meter on the integration bridge: packets over ``kbps`` (kbit/s) are dropped,
    after a burst of ``burst_kbits`` (a NIC's bandwidth limit in one direction)."""

    id: int = Field(ge=1, le=(1 << 31) - 1)
    kbps: int = Field(ge=8, le=100_000_000)
    burst_kbits: int = Field(ge=8, le=100_000_000)


def meter_for(meter_id: int, kbps: int) -> PortMeter:
    """The meter of a ``kbps`` limit: a burst of half a second's worth (measured: TCP through
    it keeps within 5 % of the rate; a 100 ms burst halves it, a 2 s one lets 30 % more
    through)."""
    return PortMeter(id=meter_id, kbps=kbps, burst_kbits=max(64, kbps // 2))


class PortFlows(Model):
    """The flows of one VM NIC on the integration bridge (``corral.netflows.firewall``), by its
    OVS port name: loaded while the port exists (a stopped VM has no port), with the port.
    ``meters``: the meters its flows use (its bandwidth limits), made on the bridge first."""

    port: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    flows: list[str] = Field(default_factory=list, max_length=100_000)
    meters: list[PortMeter] = Field(default_factory=list, max_length=2)


class NetworkApply(Model):
    """This host's whole network as the server computes it; the agent converges to it and keeps
    it (``<data>/network.json``) to apply again after its own or Open vSwitch's restart:

    - ``segments`` and ``uplink`` make the ``HostNetwork`` (``corral.api.host_network``) with
      the agent's own integration bridge and VXLAN underlay (its configuration);
    - ``dhcp``: every DHCP/DNS service the host runs (one per port group; others are removed);
    - ``ports``: the firewall flows of each VM NIC; the bridge's flow table is replaced
      atomically by the base flows (computed by the agent: its tunnel, patch and DHCP ports
      enter the pipeline marked with their segment) and the flows of the ports that exist.

    Answers ``{"digest": network_digest(...)}``. Applying the same state twice changes
    nothing. ``generation`` grows with every state the server computes for the host: an older
    one than the agent holds is ignored (answered with the digest it holds)."""

    kind: Literal["network.apply"] = "network.apply"
    generation: int = Field(ge=0)
    segments: list[Segment] = Field(default_factory=list, max_length=4094)
    uplink: Uplink | None = None
    dhcp: list[DhcpSegment] = Field(default_factory=list, max_length=4094)
    ports: list[PortFlows] = Field(default_factory=list, max_length=10_000)


def network_digest(state: NetworkApply) -> str:
    """What identifies a host's network state (``NetworkApply``, ``Heartbeat.network_digest``):
    SHA-256 (hex) of its canonical JSON without ``generation``. Server and agent both compute
    it with this function."""
    data = state.model_dump(mode="json", exclude={"generation"})
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


TaskPayload = Annotated[
    DiskCreate
    | DiskDelete
    | DiskFreeze
    | DiskThaw
    | DiskFlatten
    | VmDefine
    | VmUndefine
    | VmPower
    | VmCdrom
    | VolumeCreateTask
    | VolumeDeleteTask
    | VolumeCopyTask
    | VolumeAttachTask
    | VolumeDetachTask
    | VolumeResizeTask
    | VolumeQosTask
    | NicAttachTask
    | NicDetachTask
    | PoolsSync
    | SnapshotCreateTask
    | SnapshotRevertTask
    | SnapshotRebaseTask
    | SnapshotDeleteFileTask
    | RbdSnapshotTask
    | PoolImageForget
    | ImageCaptureTask
    | ImagePublishTask
    | VmSnapshotTask
    | VmMemoryTask
    | NetworkApply,
    Field(discriminator="kind"),
]


class AgentTask(Model):
    task_id: str = Field(min_length=1, max_length=200)
    payload: TaskPayload
    callback_url: str | None = None


class TaskState(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class TaskStatus(Model):
    task_id: str
    state: TaskState
    result: dict[str, object] = Field(default_factory=dict)
    error: ErrorBody | None = None


class VmReport(Model):
    """A VM as the host sees it. ``drift`` lists differences between libvirt and the stored spec."""

    vm_id: str
    power_state: PowerState
    drift: list[str] = Field(default_factory=list)


class VmEvent(Model):
    vm_id: str
    power_state: PowerState
    reason: str = ""
    at: datetime


class VmEvents(Model):
    events: list[VmEvent]


class Heartbeat(Model):
    host_id: str
    seq: int
    agent_started_at: datetime
    facts: HostFacts | None = Field(None, description="sent on the first beat and when they change")
    vms: list[VmReport]
    pools: list[PoolReport] | None = Field(
        None, description="every stored pool's report, when they changed (None: nothing new)"
    )
    pools_digest: str | None = Field(
        None, description="pools_digest of the pools the agent holds (None: it does not say)"
    )
    network_digest: str | None = Field(
        None,
        description="network_digest of the network state the agent holds (None: it does not "
        'say; "": it holds none)',
    )
