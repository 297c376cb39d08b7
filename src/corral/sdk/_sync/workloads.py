"""Accessors of the workloads: ``client.images`` (import, upload, download) and ``client.vms``."""

# Generated from corral/sdk/_async/workloads.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from corral.api.cdrom import BootOrder, CdromInsert
from corral.api.errors import CorralError
from corral.api.images import Image, ImageCreate
from corral.api.vms import Vm, VmCreate, VmResize, VmStop, VmVolume
from corral.sdk._base import DownloadSink, ProgressCallback, UploadSource, build, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection

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
    ) -> Operation:
        """Create (and by default start) a VM; sizes come from ``offering`` unless given.
        ``volumes``: blank data volumes made with it (``{"size_gb": 20, "pool": "ceph"}``,
        optional ``name``), attached as vdb, vdc…; the VM goes only where their pools are."""
        extra: dict[str, Any] = {"volumes": list(volumes)} if volumes else {}
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
            **extra,
        )
        return self._client.operation("POST", self._path, body=body)

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
