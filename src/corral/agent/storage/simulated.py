"""The simulated volume driver: in-memory VM disks with sizes, accounted against a pool capacity."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from corral.agent.faults import FaultPlan
from corral.agent.storage.dirpool import write_new
from corral.agent.storage.driver import Fetcher
from corral.api.agent import ImageRef
from corral.api.errors import CorralError, InvalidInput, NotFound, StorageError


class SimulatedPool:
    """A ``VolumeDriver`` that keeps disks as ``{vm_id: size_gb}``; no file is written.

    - Paths look like ``sim://<host>/<vm_id>/root.qcow2``.
    - A disk claims its full ``size_gb``; ``create_vm_disk`` raises ``StorageError`` (context
      ``reason="pool_full"``) when the claims would exceed ``disk_gb``.
    - ``faults.check("disk.create")`` / ``("disk.delete")`` run first, then the latency sleep.
    - Images are not downloaded unless ``image_cache`` is a directory: then each image is fetched
      once into it and checked against ``image.sha256`` / ``size_bytes`` (``InvalidInput`` if
      they differ), which exercises the server's image download path in integration tests.
    - ``export_vm_disk`` (fault op ``disk.export``) writes a real file, ``b"simulated disk of
      <vm_id>\n"`` (no qemu-img here: not a qcow2 image); ``adopt_image`` (fault op
      ``image.adopt``) moves the file into ``image_cache`` as if downloaded, or deletes it when
      there is no cache.
    """

    def __init__(
        self,
        *,
        host_name: str,
        disk_gb: float,
        faults: FaultPlan | None = None,
        create_latency: float = 0.0,
        delete_latency: float = 0.0,
        image_cache: Path | None = None,
    ) -> None:
        self.host_name = host_name
        self.disk_gb = disk_gb
        self.faults = faults if faults is not None else FaultPlan()
        self.create_latency = create_latency
        self.delete_latency = delete_latency
        self.image_cache = image_cache
        self.calls: Counter[str] = Counter()
        self.fetches: Counter[str] = Counter()
        self.refusals = 0
        self.peak_used_gb = 0.0
        self._disks: dict[str, int] = {}
        self._used_gb = 0
        self._images: set[str] = set()
        self.layers: dict[str, list[str]] = {}
        """VM id -> the layers its disk was frozen into (``freeze_vm_disk``), oldest first."""
        self.flattened: set[str] = set()
        self._image_locks: dict[str, asyncio.Lock] = {}

    async def create_vm_disk(
        self, vm_id: str, image: ImageRef, size_gb: int, fetch: Fetcher
    ) -> str:
        self._enter("disk.create")
        if self.create_latency > 0:
            await asyncio.sleep(self.create_latency)
        path = self.disk_path(vm_id)
        if vm_id in self._disks:
            return path
        if self.image_cache is not None:
            await self._ensure_image(image, fetch, self.image_cache)
            if vm_id in self._disks:  # created meanwhile by a concurrent call
                return path
        if self._used_gb + size_gb > self.disk_gb:
            self.refusals += 1
            raise StorageError(
                f"pool of {self.host_name} is full: {self.disk_gb - self._used_gb:g} GB free,"
                f" {size_gb} GB requested for VM {vm_id}",
                reason="pool_full",
                host=self.host_name,
                vm_id=vm_id,
            )
        self._disks[vm_id] = size_gb
        self._used_gb += size_gb
        self.peak_used_gb = max(self.peak_used_gb, self._used_gb)
        return path

    async def media_path(self, image: ImageRef, fetch: Fetcher) -> str:
        """``sim://<host>/images/<image_id>.<format>``; fetched and checked like the disks'
        images when ``image_cache`` is set (fault op ``image.media``)."""
        self._enter("image.media")
        if self.image_cache is not None:
            await self._ensure_image(image, fetch, self.image_cache)
        return self._media(image)

    async def delete_vm_disk(self, vm_id: str) -> None:
        self._enter("disk.delete")
        if self.delete_latency > 0:
            await asyncio.sleep(self.delete_latency)
        size = self._disks.pop(vm_id, None)
        if size is not None:
            self._used_gb -= size

    def disk_path(self, vm_id: str) -> str:
        return f"sim://{self.host_name}/{vm_id}/root.qcow2"

    async def freeze_vm_disk(self, vm_id: str, layer: ImageRef) -> str:
        """Fault op ``disk.freeze``; the layer counts as cached (VMs made from it fetch
        nothing). ``NotFound`` if the VM has no disk."""
        self._enter("disk.freeze")
        if vm_id not in self._disks:
            raise NotFound(f"VM {vm_id} has no disk on {self.host_name}", vm_id=vm_id)
        self._images.add(layer.id)
        frozen = self.layers.setdefault(vm_id, [])
        if layer.id not in frozen:
            frozen.append(layer.id)
        return self._media(layer)

    async def thaw_vm_disk(self, vm_id: str, layer: ImageRef) -> None:
        """Fault op ``disk.thaw``: forgets the freeze."""
        self._enter("disk.thaw")
        frozen = self.layers.get(vm_id, [])
        if frozen and frozen[-1] == layer.id:
            frozen.pop()
            self._images.discard(layer.id)

    async def flatten_vm_disk(self, vm_id: str) -> None:
        """Fault op ``disk.flatten``; ``NotFound`` if the VM has no disk."""
        self._enter("disk.flatten")
        if vm_id not in self._disks:
            raise NotFound(f"VM {vm_id} has no disk on {self.host_name}", vm_id=vm_id)
        self.flattened.add(vm_id)

    def staging_path(self, image_id: str) -> Path:
        """In ``image_cache``, else in the system's temporary directory (a simulated host has
        no directory of its own)."""
        where = self.image_cache or Path(tempfile.gettempdir())
        return where / f".{self.host_name}-{image_id}.capture.part"

    async def export_vm_disk(self, vm_id: str, dest: Path) -> None:
        """Write ``b"simulated disk of <vm_id>\n"`` to ``dest`` (temporary name, then rename).
        ``NotFound`` (context ``vm_id``) if the VM has no simulated disk."""
        self._enter("disk.export")

        async def write(part: Path) -> None:
            if vm_id not in self._disks:
                raise NotFound(f"VM {vm_id} has no disk on {self.host_name}", vm_id=vm_id)
            await asyncio.to_thread(part.write_bytes, f"simulated disk of {vm_id}\n".encode())

        try:
            await write_new(dest, write)
        except OSError as exc:
            raise StorageError(
                f"cannot export the disk of VM {vm_id}: {exc}", vm_id=vm_id, dest=str(dest)
            ) from exc

    async def adopt_image(self, image: ImageRef, file: Path) -> Path:
        """With ``image_cache``: ``file`` renamed to ``<image_cache>/<image_id>.img`` and the
        image recorded as fetched (already there: ``file`` deleted), that path returned.
        Without: ``file`` deleted and ``Path(media path)`` returned (pathlib shows it as
        ``sim:/<host>/images/<image_id>.<format>``). ``StorageError`` if ``file`` is missing."""
        self._enter("image.adopt")
        async with self._image_locks.setdefault(image.id, asyncio.Lock()):
            try:
                if self.image_cache is None:
                    await asyncio.to_thread(file.unlink)
                    return Path(self._media(image))
                dest = self.image_cache / f"{image.id}.img"
                if image.id in self._images:
                    await asyncio.to_thread(file.unlink, missing_ok=True)
                else:
                    await asyncio.to_thread(file.replace, dest)
                    self._images.add(image.id)
                return dest
            except OSError as exc:
                raise StorageError(
                    f"cannot add image {image.id} to the cache: {exc}", image_id=image.id
                ) from exc

    async def capacity_gb(self) -> tuple[float, float]:
        return float(self.disk_gb), float(self.disk_gb - self._used_gb)

    @property
    def disks(self) -> Mapping[str, int]:
        """Size in GB of each VM's disk, by VM id (read-only view)."""
        return MappingProxyType(self._disks)

    def fail_next(self, op: str, error: CorralError | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` fail (see ``FaultPlan.fail_next``)."""
        self.faults.fail_next(op, error, times)

    def _media(self, image: ImageRef) -> str:
        return f"sim://{self.host_name}/images/{image.id}.{image.format}"

    def _enter(self, op: str) -> None:
        self.calls[op] += 1
        self.faults.check(op)

    async def _ensure_image(self, image: ImageRef, fetch: Fetcher, cache: Path) -> None:
        """Fetch ``image`` into ``cache`` once and check it; nothing is left behind on failure."""
        if image.id in self._images:
            return
        lock = self._image_locks.setdefault(image.id, asyncio.Lock())
        async with lock:
            if image.id in self._images:
                return
            dest = cache / f"{image.id}.img"
            part = cache / f"{image.id}.img.part"
            self.fetches[image.id] += 1
            try:
                await fetch(image, part)
                digest, size = await asyncio.to_thread(_sha256_and_size, part)
                if digest != image.sha256 or size != image.size_bytes:
                    raise InvalidInput(
                        f"image {image.id} does not match its checksum or size",
                        image_id=image.id,
                        expected_sha256=image.sha256,
                        actual_sha256=digest,
                        expected_size=image.size_bytes,
                        actual_size=size,
                    )
                part.replace(dest)
            except CorralError:
                raise
            except Exception as exc:
                raise StorageError(f"cannot cache image {image.id}: {exc}") from exc
            finally:
                part.unlink(missing_ok=True)  # gone already after a success
            self._images.add(image.id)


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
