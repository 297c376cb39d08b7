"""Accessors of the workloads: ``client.images`` (import, upload, capture, download) and
``client.vms`` (create, power actions, clone...)."""

# Generated from corral/sdk/_async/workloads.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from corral.api.cdrom import BootOrder, CdromInsert
from corral.api.errors import CorralError
from corral.api.images import Image, ImageCreate, ImageSource
from corral.api.vms import Vm, VmClone, VmCreate, VmResize, VmStop, VmVolume
from corral.sdk._base import DownloadSink, ProgressCallback, UploadSource, build, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection
from corral.sdk._sync.vm_nics import NicLike

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client


class Images(Collection[Image]):
    """``client.images``: the image store."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/images", Image)

    def create(self, name: str, url: str | None = None) -> Operation:
        """An image record; with ``url`` the server downloads it, without the op finishes at once
        and the bytes are sent with ``upload``."""
        body = build(ImageCreate, name=name, url=url)
        return self._client.operation("POST", self._path, body=body)

    def import_url(self, name: str, url: str) -> Operation:
        """Have the server download the image at ``url``."""
        return self.create(name, url)

    def upload(
        self, ref: str, path: str | Path, *, progress: ProgressCallback | None = None
    ) -> Operation:
        """Stream a local file as the image's data; ``progress(bytes_sent, total)`` per chunk."""
        source = UploadSource(path, progress)
        return self._client.operation(
            "PUT",
            f"{self._path}/{quote_ref(ref)}/data",
            content=source.sync_chunks(),
            headers=source.headers(),
        )

    def import_file(
        self, name: str, path: str | Path, *, progress: ProgressCallback | None = None
    ) -> Operation:
        """Create the image and upload ``path``; the operation checks the format on the server.

        If the upload fails the half-created image is deleted (best effort) and the error raised.
        """
        source = UploadSource(path)  # fail on an unreadable file before creating anything
        created = self.create(name)
        created.wait()
        image_id = created.target_id or name
        try:
            return self.upload(image_id, source.path, progress=progress)
        except BaseException:
            with contextlib.suppress(CorralError):  # the upload's error is the one to report
                self.delete(image_id)
            raise

    def capture(
        self,
        name: str,
        *,
        vm: str | None = None,
        volume: str | None = None,
        snapshot: str | None = None,
    ) -> Operation:
        """Make the image ``name`` from a disk: give exactly one of ``vm`` (id or name: its root
        disk; the VM must be stopped), ``volume`` (its current data; detached, or its VMs
        stopped) or ``snapshot`` (the volume's data at that snapshot; any time). The disk's
        backing chain is flattened into one standalone image.

        Returns the ``image.capture`` operation (its ``target_id`` is the new image's id; ``wait``
        on it until the image is ``ready``, with ``source_type``/``source_id`` set). Raises
        ``InvalidInput`` (before any request) unless exactly one source is given, ``NotFound``
        for an unknown source, ``NameTaken``, ``InvalidState`` when the source cannot be read now
        (a running VM, a volume its running VM writes or that holds no data yet, a snapshot that
        is not ready, a pool type that cannot be captured) and ``QuotaExceeded``."""
        source = build(ImageSource, vm=vm, volume=volume, snapshot=snapshot)
        body = build(ImageCreate, name=name, source=source)
        return self._client.operation("POST", self._path, body=body)

    def delete(self, ref: str, *, expunge: bool = False) -> Operation:
        """Delete the image (``InUse`` while a VM, a CD-ROM drive, a volume to be copied or a
        linked-clone layer uses it). A ready image goes to the recycle bin under the
        ``delayed`` and ``never`` deletion policies (``image.recycle``), else, or with
        ``expunge``, it is deleted at once (``image.delete``)."""
        params = {"expunge": "true"} if expunge else None
        return self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}", params=params)

    def download(
        self, ref: str, path: str | Path, *, progress: ProgressCallback | None = None
    ) -> int:
        """Save the image's data to ``path``; returns the number of bytes written."""
        sink = DownloadSink(path, progress)
        return self._client.download(f"{self._path}/{quote_ref(ref)}/data", sink)


class Vms(Collection[Vm]):
    """``client.vms``: virtual machines and their power actions."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/vms", Vm)

    def create(
        self,
        name: str,
        *,
        image: str,
        offering: str | None = None,
        cpus: int | None = None,
        memory_mb: int | None = None,
        disk_gb: int | None = None,
        host: str | None = None,
        start: bool = True,
        volumes: Sequence[VmVolume | Mapping[str, Any]] = (),
        root_pool: str | None = None,
        nics: Sequence[NicLike] = (),
    ) -> Operation:
        """Create (and by default start) a VM; sizes come from ``offering`` unless given.
        ``volumes``: blank data volumes made with it (``{"size_gb": 20, "pool": "ceph"}``,
        optional ``name``), attached as vdb, vdc…; the VM goes only where their pools are.
        ``root_pool`` (id or name): its root disk is a volume on that pool (``<name>-root``,
        role ``root``, made from the image, deleted with the VM; ``Vm.root_volume_id``), which
        whole-VM snapshots (``client.vm_snapshots``) need; without it the root disk is
        host-local. ``nics``: its network interfaces in device order, each a ``NicCreate`` or
        its fields (``{"port_group": "web", "ips": ["10.0.0.5"], "security_groups":
        ["web"]}``; see ``client.vm_nics.add``); their addresses are allocated with the VM and
        it goes only to a host carrying their port groups."""
        extra: dict[str, Any] = {"volumes": list(volumes)} if volumes else {}
        if nics:
            extra["nics"] = list(nics)
        body = build(
            VmCreate,
            name=name,
            image=image,
            offering=offering,
            cpus=cpus,
            memory_mb=memory_mb,
            disk_gb=disk_gb,
            host=host,
            start=start,
            root_pool=root_pool,
            **extra,
        )
        return self._client.operation("POST", self._path, body=body)

    def delete(self, ref: str, *, expunge: bool = False) -> Operation:
        """Delete the VM. Under the ``delayed`` and ``never`` deletion policies a stopped,
        running or paused VM goes to the recycle bin (``vm.recycle``: powered off, its disk,
        host claim and quota kept until it is expunged); with ``expunge``, under the
        ``immediate`` policy or in another state it is deleted at once (``vm.delete``)."""
        params = {"expunge": "true"} if expunge else None
        return self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}", params=params)

    def _action(self, ref: str, action: str, body: BaseModel | None = None) -> Operation:
        return self._client.operation("POST", f"{self._path}/{quote_ref(ref)}/{action}", body=body)

    def start(self, ref: str) -> Operation:
        return self._action(ref, "start")

    def stop(
        self,
        ref: str,
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> Operation:
        """ACPI shutdown, forced off after ``timeout`` s (server default 60); ``force``: at once."""
        if timeout is None:
            body = build(VmStop, force=force)
        else:
            body = build(VmStop, force=force, timeout=timeout)
        return self._action(ref, "stop", body)

    def reboot(self, ref: str) -> Operation:
        return self._action(ref, "reboot")

    def pause(self, ref: str) -> Operation:
        return self._action(ref, "pause")

    def resume(self, ref: str) -> Operation:
        return self._action(ref, "resume")

    def resize(
        self, ref: str, *, cpus: int | None = None, memory_mb: int | None = None
    ) -> Operation:
        """Change CPUs and/or memory of a stopped VM."""
        return self._action(ref, "resize", build(VmResize, cpus=cpus, memory_mb=memory_mb))

    def insert_cdrom(self, ref: str, image: str) -> Operation:
        """Put the ISO image ``image`` (id or name) in the VM's CD-ROM drive (live if it runs)."""
        return self._action(ref, "cdrom", build(CdromInsert, image=image))

    def eject_cdrom(self, ref: str) -> Operation:
        """Empty the VM's CD-ROM drive (live if it runs)."""
        return self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}/cdrom")

    def set_boot_order(self, ref: str, boot: Sequence[str]) -> Operation:
        """Boot from ``boot`` in order (``["cdrom", "hd"]``), from the VM's next boot on."""
        return self._action(ref, "boot-order", build(BootOrder, boot=list(boot)))

    def clone(
        self,
        ref: str,
        name: str,
        *,
        count: int = 1,
        start: bool = True,
        host: str | None = None,
        mode: Literal["full", "linked", "instant"] = "full",
        pool: str | None = None,
    ) -> Operation:
        """Clone the stopped VM ``ref`` (id or name) ``count`` times (1 to 50): the clone is
        ``name`` when ``count`` is 1, else ``<name>-1`` … ``<name>-<count>``. The clones' base
        is the image ``<name>-base``. ``full``: the source's root disk is captured once into
        the image store and every clone's disk is a copy-on-write overlay on it, so the clones
        do not depend on the source (which may be deleted). ``linked``: the disk is frozen in
        constant time into a layer on the source's host (the source goes on in an overlay of
        it) and the clones, on that host, are overlays on it. ``instant``: linked, then every
        clone's disk gets the layer's data copied in and depends on no image. Each clone has
        the source's CPUs, memory and disk size, is started unless ``start`` is False and is
        placed on ``host`` when given (full clones only); data volumes are not cloned.
        ``pool`` (id or name; full clones only, else ``InvalidInput``): each clone's root disk
        is a root volume on that pool; by default clones of a VM whose root disk is a volume
        get root volumes on its pool, and clones of a VM with a host-local root disk
        host-local ones. A VM whose root disk is a volume is cloned ``full`` only
        (``InvalidState`` with ``context["reason"] == "root_volume"`` otherwise).

        Returns the ``vm.clone`` operation (its ``target_id`` is the source's id); it succeeds
        once every clone exists. Raises ``InvalidInput`` (before any request) for a bad name,
        count or mode, ``NotFound``, ``InvalidState`` when the source is not stopped,
        ``NameTaken`` when a clone's or the base image's name is taken and ``QuotaExceeded``;
        waiting raises the operation's error if a clone could not be created (``context``
        ``failed_vms``; the clones made and their base stay)."""
        body = build(VmClone, name=name, mode=mode, count=count, start=start, host=host, pool=pool)
        return self._action(ref, "clone", body)
