"""The simulated volume driver: in-memory VM disks with sizes, accounted against a pool capacity."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from corral.agent.faults import FaultPlan
from corral.agent.storage.driver import Fetcher
from corral.api.agent import ImageRef
from corral.api.errors import CorralError, InvalidInput, StorageError


class SimulatedPool:
    """A ``VolumeDriver`` that keeps disks as ``{vm_id: size_gb}``; no file is written.

    - Paths look like ``sim://<host>/<vm_id>/root.qcow2``.
    - A disk claims its full ``size_gb``; ``create_vm_disk`` raises ``StorageError`` (context
      ``reason="pool_full"``) when the claims would exceed ``disk_gb``.
    - ``faults.check("disk.create")`` / ``("disk.delete")`` run first, then the latency sleep.
    - Images are not downloaded unless ``image_cache`` is a directory: then each image is fetched
      once into it and checked against ``image.sha256`` / ``size_bytes`` (``InvalidInput`` if
      they differ), which exercises the server's image download path in integration tests.
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
        self._image_locks: dict[str, asyncio.Lock] = {}

    async def create_vm_disk(
        self, vm_id: str, image: ImageRef, size_gb: int, fetch: Fetcher
    ) -> str:
        self.calls["disk.create"] += 1
        self.faults.check("disk.create")
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
        self.calls["image.media"] += 1
        self.faults.check("image.media")
        if self.image_cache is not None:
            await self._ensure_image(image, fetch, self.image_cache)
        return f"sim://{self.host_name}/images/{image.id}.{image.format}"

    async def delete_vm_disk(self, vm_id: str) -> None:
        self.calls["disk.delete"] += 1
        self.faults.check("disk.delete")
        if self.delete_latency > 0:
            await asyncio.sleep(self.delete_latency)
        size = self._disks.pop(vm_id, None)
        if size is not None:
            self._used_gb -= size

    def disk_path(self, vm_id: str) -> str:
        return f"sim://{self.host_name}/{vm_id}/root.qcow2"

    async def capacity_gb(self) -> tuple[float, float]:
        return float(self.disk_gb), float(self.disk_gb - self._used_gb)

    @property
    def disks(self) -> Mapping[str, int]:
        """Size in GB of each VM's disk, by VM id (read-only view)."""
        return MappingProxyType(self._disks)

    def fail_next(self, op: str, error: CorralError | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` fail (see ``FaultPlan.fail_next``)."""
        self.faults.fail_next(op, error, times)

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
