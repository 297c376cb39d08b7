"""Accessors of the workloads: ``client.images`` (import, upload, download) and ``client.vms``."""

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
from corral.sdk._async.operation import AsyncOperation
from corral.sdk._async.resources import AsyncCollection
from corral.sdk._base import DownloadSink, ProgressCallback, UploadSource, build, quote_ref

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient


class AsyncImages(AsyncCollection[Image]):
    """``client.images``: the image store."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/images", Image)

    async def create(self, name: str, url: str | None = None) -> AsyncOperation:
        """An image record; with ``url`` the server downloads it, without the op finishes at once
        and the bytes are sent with ``upload``."""
        body = build(ImageCreate, name=name, url=url)
        return await self._client.operation("POST", self._path, body=body)

    async def import_url(self, name: str, url: str) -> AsyncOperation:
        """Have the server download the image at ``url``."""
        return await self.create(name, url)

    async def upload(
        self, ref: str, path: str | Path, *, progress: ProgressCallback | None = None
    ) -> AsyncOperation:
        """Stream a local file as the image's data; ``progress(bytes_sent, total)`` per chunk."""
        source = UploadSource(path, progress)
        return await self._client.operation(
            "PUT",
            f"{self._path}/{quote_ref(ref)}/data",
            content=source.async_chunks(),
            headers=source.headers(),
        )

    async def import_file(
        self, name: str, path: str | Path, *, progress: ProgressCallback | None = None
    ) -> AsyncOperation:
        """Create the image and upload ``path``; the operation checks the format on the server.

        If the upload fails the half-created image is deleted (best effort) and the error raised.
        """
        source = UploadSource(path)  # fail on an unreadable file before creating anything
        created = await self.create(name)
        await created.wait()
        image_id = created.target_id or name
        try:
            return await self.upload(image_id, source.path, progress=progress)
        except BaseException:
            with contextlib.suppress(CorralError):  # the upload's error is the one to report
                await self.delete(image_id)
            raise

    async def download(
        self, ref: str, path: str | Path, *, progress: ProgressCallback | None = None
    ) -> int:
        """Save the image's data to ``path``; returns the number of bytes written."""
        sink = DownloadSink(path, progress)
        return await self._client.download(f"{self._path}/{quote_ref(ref)}/data", sink)


class AsyncVms(AsyncCollection[Vm]):
    """``client.vms``: virtual machines and their power actions."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/vms", Vm)

    async def create(
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
    ) -> AsyncOperation:
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
        return await self._client.operation("POST", self._path, body=body)

    async def _action(self, ref: str, action: str, body: BaseModel | None = None) -> AsyncOperation:
        return await self._client.operation(
            "POST", f"{self._path}/{quote_ref(ref)}/{action}", body=body
        )

    async def start(self, ref: str) -> AsyncOperation:
        return await self._action(ref, "start")

    async def stop(
        self,
        ref: str,
        *,
        force: bool = False,
        timeout: float | None = None,
    ) -> AsyncOperation:
        """ACPI shutdown, forced off after ``timeout`` s (server default 60); ``force``: at once."""
        if timeout is None:
            body = build(VmStop, force=force)
        else:
            body = build(VmStop, force=force, timeout=timeout)
        return await self._action(ref, "stop", body)

    async def reboot(self, ref: str) -> AsyncOperation:
        return await self._action(ref, "reboot")

    async def pause(self, ref: str) -> AsyncOperation:
        return await self._action(ref, "pause")

    async def resume(self, ref: str) -> AsyncOperation:
        return await self._action(ref, "resume")

    async def resize(
        self, ref: str, *, cpus: int | None = None, memory_mb: int | None = None
    ) -> AsyncOperation:
        """Change CPUs and/or memory of a stopped VM."""
        return await self._action(ref, "resize", build(VmResize, cpus=cpus, memory_mb=memory_mb))

    async def insert_cdrom(self, ref: str, image: str) -> AsyncOperation:
        """Put the ISO image ``image`` (id or name) in the VM's CD-ROM drive (live if it runs)."""
        return await self._action(ref, "cdrom", build(CdromInsert, image=image))

    async def eject_cdrom(self, ref: str) -> AsyncOperation:
        """Empty the VM's CD-ROM drive (live if it runs)."""
        return await self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}/cdrom")

    async def set_boot_order(self, ref: str, boot: Sequence[str]) -> AsyncOperation:
        """Boot from ``boot`` in order (``["cdrom", "hd"]``), from the VM's next boot on."""
        return await self._action(ref, "boot-order", build(BootOrder, boot=list(boot)))
