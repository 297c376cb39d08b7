"""Data volumes of ``nfs`` pools, through QEMU's userspace NFS client only (nothing is mounted).

Layout on the export: ``<export>/corral-volumes/<VolumeRef.name>`` (``vol-<id>.qcow2``),
created 0600 by ``qemu-img create nfs://…`` as ``<name>.part`` and renamed when complete (an
NFS RENAME is atomic on the server), so an existing volume file is always a good one.
``qemu-img`` makes, inspects and grows the files; the rest (mkdir, exists, rename, unlink,
statvfs) goes through libnfs in a child process (``libnfs.py``: Debian 12's libnfs-utils has no
nfs-rm / nfs-mkdir / nfs-stat). Every child process has a timeout and is killed on cancel.

What was verified (QEMU 7.2, libvirt 9.0, libnfs 4.0, nfs-ganesha 4 with NFSv3 on this testbed):

- QEMU's URL is ``nfs://<server>/<export>/corral-volumes/<name>[?uid=N&gid=N]``: QEMU splits
  the path at its last ``/`` and MOUNTs the directory part (``<export>/corral-volumes``, a
  sub-directory of the export: ganesha and Linux knfsd allow that for NFSv3), so the directory
  must exist first (else MNT3ERR_ACCES). libnfs asks the server's portmapper for the ports; no
  port is configurable. ``uid``/``gid`` are the AUTH_SYS identity (default: the caller's uid,
  root for the agent); this backend passes ``uid=0&gid=0`` explicitly (``uid``/``gid`` of the
  constructor). With root squashing on the server every access is the anonymous user instead,
  which is still consistent as long as QEMU uses the same identity.
- ``qemu-img create`` over an existing file truncates it: hence the existence check and the
  ``.part`` name (calls for one volume are serialized in this process).
- libvirt's ``<disk type='network'><source protocol='nfs' name='/<export>/corral-volumes/<name>'>
  <host name='<server>'/>`` becomes ``{"driver":"nfs","server":{"type":"inet","host":…},
  "path":"/<export>/corral-volumes/<name>"}`` (checked with ``virsh domxml-to-native``). libvirt
  9.0 rejects a ``port`` on an nfs ``<host>`` ("port cannot be specified in 'nfs' protocol
  host"): ``DiskSource.hosts`` says 2049 for information, the domain XML must omit it. Without
  ``<identity user= group=/>`` (required by libvirt's schema for nfs) QEMU runs as libvirt-qemu
  and uses that uid over NFS, which cannot open the 0600 root-owned files made here: the domain
  XML needs ``<identity user='root' group='root'/>`` (then QEMU gets ``"user":0,"group":0``).
- usage: NFSv3 FSSTAT of the export (libnfs ``nfs_statvfs64``): ``total`` and ``free`` (the
  space available to the client, ``f_bavail``), as ``df`` shows them on the server.
- Snapshot files (``create_overlay``, ``rebase``): QEMU 7.2's NFS driver resolves a relative
  backing name under the image itself (``…/v1`` backed by ``v0`` opens ``…/v1/v0``: MOUNT of a
  file, MNT3ERR_ACCES), so unlike local pools an overlay names its backing by its full URL,
  ``nfs://<server>/<export>/corral-volumes/<name>?uid=0&gid=0``: the AUTH_SYS identity is in
  it, so whoever opens the chain from the image headers (qemu-img; QEMU when libvirt does not
  read the chain itself) reaches the 0600 files as the agent does. The chain is thus tied to the
  server's address and the export path (moving the export needs ``qemu-img rebase -u``).
  ``qemu-img create`` and ``rebase`` in safe mode work over these URLs (verified with qemu-io
  reading the data back); NFS has no image locks, so a file QEMU has open is not protected: the
  caller must not rebase one.
- ``export``: ``qemu-img convert`` reads ``nfs://`` URLs (the chain through the backing URLs in
  the headers) and writes the flattened copy to a local file; no lock protects a file a running
  VM writes either.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from corral.agent.storage import libnfs
from corral.agent.storage.backend import (
    DiskSource,
    PoolUsage,
    check_fits,
    check_source_format,
    exported_file,
)
from corral.agent.storage.common import (
    GIB,
    PART_SUFFIX,
    KeyedLocks,
    file_ref,
    name_in_dir,
    pool_settings,
    safe_image_id,
    safe_name,
    volume_error,
)
from corral.agent.storage.dirpool import write_new
from corral.agent.storage.qemu_img import QEMU_IMG
from corral.agent.storage.tools import run_tool
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import CorralError, StorageError
from corral.api.storage import NfsSettings

log = logging.getLogger(__name__)

VOLUMES_DIR = "corral-volumes"
BASE_PREFIX = "corral-image-"
"""The pool's copy of an image that volumes are overlays on (``create_on_image``)."""
NFS_PORT = 2049


class NfsBackend:
    """A ``VolumeBackend`` for ``nfs`` pools (see the module docstring).

    ``uid``/``gid``: the AUTH_SYS identity of every access (the compute driver must give QEMU
    the same one). ``timeout``: seconds allowed to each qemu-img or libnfs child process,
    ``copy_timeout`` to the copy of an ``export``.
    """

    def __init__(
        self,
        *,
        qemu_img: str = QEMU_IMG,
        python: str = sys.executable,
        uid: int = 0,
        gid: int = 0,
        timeout: float = 120.0,
        copy_timeout: float = 3600.0,
    ) -> None:
        self.qemu_img = qemu_img
        self.python = python
        self.uid = uid
        self.gid = gid
        self.timeout = timeout
        self.copy_timeout = copy_timeout
        self._locks = KeyedLocks()

    def url(self, volume: VolumeRef, *, suffix: str = "") -> str:
        """QEMU's ``nfs://`` URL of the volume's file (with this backend's uid/gid)."""
        settings, name = self._where(volume)
        path = quote(f"{_export(settings)}/{VOLUMES_DIR}/{name}{suffix}")
        return f"nfs://{_url_host(settings.server)}{path}?uid={self.uid}&gid={self.gid}"

    async def create(self, volume: VolumeRef) -> None:
        """Make the file unless it exists (an existing file is kept); creates the
        ``corral-volumes`` directory if absent."""
        _, name = self._where(volume)
        final, part = _rel(name), _rel(name + PART_SUFFIX)
        async with self._locks.hold(self._key(volume)):
            started = False
            try:
                _, exists = await self._nfs(
                    volume.pool, ["mkdir", f"/{VOLUMES_DIR}"], ["exists", final]
                )
                if exists:
                    return
                started = True
                size = str(volume.size_gb * GIB)
                url = self.url(volume, suffix=PART_SUFFIX)
                await self._qemu_img("create", "-q", "-f", volume.format, url, size)
                await self._nfs(volume.pool, ["rename", part, final])
            except BaseException as exc:
                if started:
                    await self._discard(volume.pool, part)
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def create_from(self, volume: VolumeRef, source: Path, source_format: str) -> None:
        """``qemu-img convert`` of the local ``source`` to ``<name>.part`` over ``nfs://``,
        grown to ``volume.size_gb``, then renamed over libnfs; an existing file is kept."""
        fmt = check_source_format(volume, source_format)
        _, name = self._where(volume)
        final, part = _rel(name), _rel(name + PART_SUFFIX)
        async with self._locks.hold(self._key(volume)):
            started = False
            try:
                _, exists = await self._nfs(
                    volume.pool, ["mkdir", f"/{VOLUMES_DIR}"], ["exists", final]
                )
                if exists:
                    return
                out = await self._qemu_img("info", "--output=json", "-U", "-f", fmt, str(source))
                virtual_size = _virtual_size(out)
                check_fits(volume, virtual_size)
                started = True
                url = self.url(volume, suffix=PART_SUFFIX)
                await self._qemu_img(
                    "convert", "-q", "-f", fmt, "-O", volume.format, str(source), url
                )
                if virtual_size < volume.size_gb * GIB:
                    size = str(volume.size_gb * GIB)
                    await self._qemu_img("resize", "-q", "-f", volume.format, url, size)
                await self._nfs(volume.pool, ["rename", part, final])
            except BaseException as exc:
                if started:
                    await self._discard(volume.pool, part)
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def create_on_image(
        self, volume: VolumeRef, image_id: str, source: Path, source_format: str
    ) -> None:
        """The volume as a qcow2 overlay (``volume.size_gb``) on the pool's own qcow2 copy of
        the image, ``corral-volumes/corral-image-<image_id>.qcow2`` (converted once per pool
        from ``source``, the host's checked cache copy; named by its full URL, as NFS
        snapshots are). A raw (shareable) volume is a full copy (``create_from``). Existing
        volume: kept (grown to ``size_gb`` if a call was cut short)."""
        if volume.format != "qcow2":
            await self.create_from(volume, source, source_format)
            return
        fmt = check_source_format(volume, source_format)
        out = await self._qemu_img("info", "--output=json", "-U", "-f", fmt, str(source))
        virtual_size = _virtual_size(out)
        check_fits(volume, virtual_size)
        base = volume.model_copy(
            update={
                "volume_id": f"image-{safe_image_id(image_id)}",
                "name": f"{BASE_PREFIX}{image_id}.qcow2",
                "format": "qcow2",
                "size_gb": max(1, -(-virtual_size // GIB)),
            }
        )
        await self.create_from(base, source, fmt)
        await self.create_overlay(volume, volume.name, base.name)
        await self.resize(volume, volume.size_gb)

    async def forget_image(self, pool: PoolRef, image_id: str) -> None:
        """Remove ``corral-volumes/corral-image-<image_id>.qcow2`` (the caller knows no volume
        is an overlay on it); absent: success."""
        base = VolumeRef(
            volume_id=f"image-{safe_image_id(image_id)}",
            pool=pool,
            name=f"{BASE_PREFIX}{image_id}.qcow2",
            size_gb=1,
        )
        await self.delete(base)

    async def delete(self, volume: VolumeRef) -> None:
        """Remove the file (and a ``.part`` left by a crash) over NFS; absent is success."""
        _, name = self._where(volume)
        async with self._locks.hold(self._key(volume)):
            try:
                part = _rel(name + PART_SUFFIX)
                await self._nfs(volume.pool, ["unlink", _rel(name)], ["unlink", part])
            except Exception as exc:
                raise volume_error("delete", volume, exc) from exc

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """Grow the file's virtual size to ``size_gb``; already that size or larger: nothing.
        ``StorageError`` (context ``reason="not_found"``) if the volume does not exist."""
        _, name = self._where(volume)
        async with self._locks.hold(self._key(volume)):
            try:
                (exists,) = await self._nfs(volume.pool, ["exists", _rel(name)])
                if not exists:
                    raise StorageError(
                        f"volume {volume.volume_id} does not exist", reason="not_found"
                    )
                out = await self._qemu_img(
                    "info", "--output=json", "-U", "-f", volume.format, self.url(volume)
                )
                if _virtual_size(out) >= size_gb * GIB:
                    return
                await self._qemu_img(
                    "resize", "-q", "-f", volume.format, self.url(volume), str(size_gb * GIB)
                )
            except Exception as exc:
                raise volume_error("resize", volume, exc) from exc

    def source(self, volume: VolumeRef) -> DiskSource:
        settings, name = self._where(volume)
        return DiskSource(
            kind="network",
            protocol="nfs",
            name=f"{_export(settings)}/{VOLUMES_DIR}/{name}",
            hosts=((_bare_host(settings.server), NFS_PORT),),
            format=volume.format,
        )

    async def prepare(self, pool: PoolRef) -> None:
        """Create the export's ``corral-volumes`` directory if absent (QEMU mounts it)."""
        await self._nfs(pool, ["mkdir", f"/{VOLUMES_DIR}"])

    async def usage(self, pool: PoolRef) -> PoolUsage:
        """Total and free (available) space of the export, from the server (NFSv3 FSSTAT)."""
        (stat,) = await self._nfs(pool, ["statvfs", "/"])
        return PoolUsage(total_gb=int(stat["total"]) / GIB, free_gb=int(stat["free"]) / GIB)

    # --- snapshot files (see the module docstring) -------------------------------------------

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        """Make ``new_name``, an empty qcow2 overlay of ``backing_name`` (named by its
        ``nfs://`` URL, see the module docstring; the backing's virtual size), unless it
        exists. ``StorageError`` (``reason="not_found"``) if the backing file does not exist."""
        new, backing = file_ref(volume, new_name), file_ref(volume, backing_name)
        final, part = _rel(safe_name(new)), _rel(safe_name(new) + PART_SUFFIX)
        safe_name(backing)
        async with self._locks.hold(self._key(new)):
            started = False
            try:
                exists, backing_exists = await self._nfs(
                    volume.pool, ["exists", final], ["exists", _rel(backing_name)]
                )
                if exists:
                    return
                if not backing_exists:
                    raise StorageError(
                        f"backing file {backing_name} does not exist",
                        reason="not_found",
                        name=backing_name,
                    )
                out = await self._qemu_img(
                    "info", "--output=json", "-U", "-f", "qcow2", self.url(backing)
                )
                started = True
                await self._qemu_img(
                    *("create", "-q", "-u", "-f", "qcow2", "-F", "qcow2"),
                    *("-b", self.url(backing), self.url(new, suffix=PART_SUFFIX)),
                    str(_virtual_size(out)),
                )
                await self._nfs(volume.pool, ["rename", part, final])
            except BaseException as exc:
                if started:
                    await self._discard(volume.pool, part)
                if isinstance(exc, Exception):
                    raise volume_error("create an overlay of", volume, exc) from exc
                raise

    async def rebase(self, volume: VolumeRef, name: str, backing_name: str | None) -> None:
        """``qemu-img rebase`` (safe mode) of ``name`` onto ``backing_name`` (None: standalone)
        over ``nfs://``; already there: nothing. NFS has no locks QEMU would see: the caller
        must make sure no VM has ``name`` open."""
        ref = file_ref(volume, name)
        backing = ""
        if backing_name is not None:
            backing = self.url(file_ref(volume, backing_name))
        async with self._locks.hold(self._key(ref)):
            try:
                if await self._backing(ref) == backing_name:
                    return
                args = ["rebase", "-q", "-f", "qcow2", "-b", backing]
                if backing_name is not None:
                    args += ["-F", "qcow2"]
                await self._qemu_img(*args, self.url(ref))
            except Exception as exc:
                raise volume_error("rebase", volume, exc) from exc

    async def delete_file(self, volume: VolumeRef, name: str) -> None:
        """Remove the file ``name`` (and a ``.part`` of it) over NFS; absent is success."""
        ref = volume.model_copy(update={"name": name})
        await self.delete(ref)

    async def backing_of(self, volume: VolumeRef, name: str) -> str | None:
        ref = file_ref(volume, name)
        try:
            return await self._backing(ref)
        except Exception as exc:
            raise volume_error("inspect", volume, exc) from exc

    async def export(self, volume: VolumeRef, name: str, dest: Path) -> None:
        """``qemu-img convert -O qcow2`` of the ``nfs://`` URL of ``name`` (read as the
        volume's format, its chain through the backing URLs) into the local ``dest`` (see
        ``VolumeBackend.export``), within ``copy_timeout``. No lock stops a file a running VM
        writes: the caller must not export one."""
        ref = exported_file(volume, name)
        self._where(ref)  # InvalidInput for an unsafe name or settings, before dest is touched

        async def convert(part: Path) -> None:
            await self._must_exist(ref)
            args = ("convert", "-q", "-f", ref.format, "-O", "qcow2", self.url(ref), str(part))
            await self._qemu_img(*args, timeout=self.copy_timeout)

        async with self._locks.hold(self._key(ref)):
            try:
                await write_new(dest, convert)
            except Exception as exc:
                raise volume_error("export", volume, exc) from exc

    async def allocated(self, volume: VolumeRef, name: str) -> int | None:
        """The ``actual-size`` ``qemu-img info`` reports for the ``nfs://`` URL of ``name``
        (QEMU's NFS driver: the file's ``st_blocks * 512`` from an NFS GETATTR, as the server
        counts it); None (logged) if it is missing, qemu-img fails or reports none."""
        try:
            ref = exported_file(volume, name)
            self._where(ref)  # InvalidInput for an unsafe name or settings
            async with self._locks.hold(self._key(ref)):
                await self._must_exist(ref)
                out = await self._qemu_img(
                    "info", "--output=json", "-U", "-f", ref.format, self.url(ref)
                )
            size = json.loads(out).get("actual-size")
        except (CorralError, ValueError, AttributeError) as exc:
            log.warning("cannot measure %s of volume %s: %s", name, volume.volume_id, exc)
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            log.warning(
                "qemu-img reports no actual size for %s of volume %s", name, volume.volume_id
            )
            return None
        return size

    async def _must_exist(self, ref: VolumeRef) -> None:
        """``StorageError`` (``reason="not_found"``) unless the file of ``ref`` exists."""
        (exists,) = await self._nfs(ref.pool, ["exists", _rel(safe_name(ref))])
        if not exists:
            raise StorageError(f"file {ref.name} does not exist", reason="not_found")

    async def _backing(self, ref: VolumeRef) -> str | None:
        await self._must_exist(ref)
        out = await self._qemu_img("info", "--output=json", "-U", "-f", "qcow2", self.url(ref))
        try:
            backing = json.loads(out).get("backing-filename")
        except (ValueError, AttributeError) as exc:
            raise StorageError("unexpected output of qemu-img info", output=out[:2000]) from exc
        if backing is None:
            return None
        directory = self.url(ref).split("?", 1)[0].rpartition("/")[0]
        return name_in_dir(str(backing).split("?", 1)[0], directory)

    # --- helpers ----------------------------------------------------------------------------

    def _where(self, volume: VolumeRef) -> tuple[NfsSettings, str]:
        return pool_settings(volume.pool, NfsSettings), safe_name(volume)

    def _key(self, volume: VolumeRef) -> str:
        return f"{volume.pool.id}/{volume.name}"

    async def _qemu_img(self, *args: str, timeout: float | None = None) -> str:
        timeout = self.timeout if timeout is None else timeout
        result = await run_tool([self.qemu_img, *args], timeout=timeout)
        return result.stdout

    async def _nfs(self, pool: PoolRef, *ops: list[str], timeout: float | None = None) -> list[Any]:
        """Run ``ops`` (see ``libnfs``) against the pool's export in one child process.

        ``StorageError`` (context ``pool_id``, ``op``, ``path``, ``errno``) when one fails."""
        settings = pool_settings(pool, NfsSettings)
        timeout = self.timeout if timeout is None else timeout
        request = {
            "server": _bare_host(settings.server),
            "export": _export(settings) or "/",
            "uid": self.uid,
            "gid": self.gid,
            "timeout_s": max(1, int(timeout / 2)),
            "ops": list(ops),
        }
        result = await run_tool(
            [self.python, "-I", str(Path(libnfs.__file__))],
            stdin=json.dumps(request).encode(),
            timeout=timeout,
            check=False,
        )
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            answer = {}
        if result.returncode == 0 and "results" in answer:
            return list(answer["results"])
        error = answer.get("error") or {}
        message = error.get("message") or result.stderr or f"exit status {result.returncode}"
        where = f"{settings.server}:{_export(settings)}{error.get('path', '')}"
        raise StorageError(
            f"NFS {error.get('op') or 'request'} failed on {where}: {message}",
            pool_id=pool.id,
            op=error.get("op"),
            path=error.get("path"),
            errno=error.get("errno"),
            returncode=result.returncode,
        )

    async def _discard(self, pool: PoolRef, path: str) -> None:
        """Remove a half-made ``.part``; best effort, within 10 s (one left behind is replaced
        by the next create of the volume, removed by its delete)."""
        try:
            await self._nfs(pool, ["unlink", path], timeout=min(self.timeout, 10.0))
        except Exception:
            pass


def _rel(name: str) -> str:
    """A file's path relative to the export, as libnfs wants it."""
    return f"/{VOLUMES_DIR}/{name}"


def _export(settings: NfsSettings) -> str:
    """The export path without a trailing ``/`` (``""`` for ``/``)."""
    stripped = settings.export.strip("/")
    return f"/{stripped}" if stripped else ""


def _bare_host(server: str) -> str:
    """``server`` without the brackets of an IPv6 literal (libvirt's and libnfs's form)."""
    return server[1:-1] if server.startswith("[") and server.endswith("]") else server


def _url_host(server: str) -> str:
    host = _bare_host(server)
    return f"[{host}]" if ":" in host else host


def _virtual_size(out: str) -> int:
    try:
        return int(json.loads(out)["virtual-size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError("unexpected output of qemu-img info", output=out[:2000]) from exc
