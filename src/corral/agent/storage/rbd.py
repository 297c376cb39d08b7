"""Data volumes of ``rbd`` pools: Ceph RBD images, driven with the ``rbd`` and ``ceph`` CLIs.

Every call connects with the pool's settings alone: monitors (``-m host:port,…``, port 6789 when
absent, as libvirt hands them to QEMU), ``--id <user>`` and the cephx key from
``pool.credentials`` in a temporary 0600 keyfile (``--keyfile``; never on a command line, in an
error or a log) next to an empty ``ceph.conf`` (the host's /etc/ceph is not used), both deleted
when the call ends. A pool without credentials is refused (``InvalidInput``): cephx is assumed.

What the tools answer (Ceph 16.2, verified on the testbed): ``rbd create`` of an existing image
exits 17 (EEXIST), ``rbd rm``/``info`` of an absent one 2 (ENOENT), ``rbd rm`` of an image with
snapshots 39 (ENOTEMPTY) and of one still open (watchers, e.g. a running QEMU) 16 (EBUSY),
``rbd resize`` to a smaller size 22 without ``--allow-shrink`` (never passed). Snapshots:
``rbd snap create`` of an existing one exits 17, ``snap rollback``/``snap rm`` of an absent one 2
(as does any ``snap``/``status`` command on an absent image), ``snap rm`` of a protected one 16,
``snap unprotect`` of an unprotected one 22 and of one with clones 16; ``snap purge`` skips
protected snapshots and still exits 0. ``snap rollback`` of an image a client merely has open
(a watcher, as ``rbd status`` lists them) succeeds under that client, and fails with 30 (EROFS)
only when the client holds the image's exclusive lock (QEMU once it wrote): the watchers are
checked first (see ``snap_rollback``). A wrong key fails
with 13 (EACCES) over msgr v1, but over msgr v2 the client keeps retrying until
``client_mount_timeout`` and exits 110 (ETIMEDOUT), like unreachable monitors: ``connect_timeout``
bounds that. ``ceph df -f json`` works with the ``profile rbd`` caps libvirt clients have.

``qemu-img`` reaches images through QEMU's rbd driver (``create_from`` writes one, ``export``
reads one): ``--image-opts`` naming the pool, image, monitors and user, with the key in a
``secret`` object read from the same temporary keyfile. QEMU's rbd driver takes no image lock, so
nothing stops ``export`` of an image a running VM writes: the caller must not ask for one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.storage.backend import (
    DiskAuth,
    DiskSource,
    PoolUsage,
    check_fits,
    check_source_format,
)
from corral.agent.storage.common import (
    GIB,
    MIB,
    PART_SUFFIX,
    SNAPSHOTS_UNSUPPORTED,
    KeyedLocks,
    pool_settings,
    safe_image_id,
    volume_error,
)
from corral.agent.storage.dirpool import write_new
from corral.agent.storage.qemu_img import QEMU_IMG
from corral.agent.storage.tools import ToolResult, run_tool
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import CorralError, InvalidInput, StorageError
from corral.api.storage import RbdSettings

log = logging.getLogger(__name__)

MON_PORT = 6789
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{4} ")
_SNAP = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENOENT, EBUSY, EEXIST, ENOTEMPTY, EACCES, ETIMEDOUT = 2, 16, 17, 39, 13, 110
BASE_PREFIX = "corral-image-"
"""The pool's copy of an image that volumes are copy-on-write clones of (``create_on_image``)."""
BASE_SNAP = "base"
EINVAL, EROFS = 22, 30
_SECRET_ID = "sec0"


@dataclass(frozen=True)
class _Conn:
    """What one call needs to reach the pool."""

    settings: RbdSettings
    key: str
    monitors: tuple[tuple[str, int], ...]

    @property
    def mon_arg(self) -> str:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.monitors)


class RbdBackend:
    """A ``VolumeBackend`` for ``rbd`` pools (see the module docstring).

    ``timeout``: seconds allowed to each ``rbd``/``ceph`` process; ``connect_timeout``: seconds
    to reach and authenticate with the monitors (Ceph's ``client_mount_timeout``).
    """

    def __init__(
        self,
        *,
        rbd: str = "rbd",
        ceph: str = "ceph",
        timeout: float = 120.0,
        connect_timeout: float = 15.0,
        tmp_dir: Path | None = None,
        qemu_img: str = QEMU_IMG,
        copy_timeout: float = 3600.0,
    ) -> None:
        self.rbd = rbd
        self.qemu_img = qemu_img
        self.copy_timeout = copy_timeout
        self.ceph = ceph
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tmp_dir = tmp_dir
        self._locks = KeyedLocks()

    async def create(self, volume: VolumeRef) -> None:
        """Make the image (thin) unless it exists; an image this call made is removed again if
        the call fails or is cancelled half-way."""
        conn, spec = self._where(volume)
        async with self._locks.hold(spec):
            made = False
            try:
                if await self._size(volume, conn, spec) is not None:
                    return
                made = True
                size = str(volume.size_gb * GIB // MIB)
                done = await self._rbd(volume.pool, conn, "create", "--size", size, spec)
                if done.returncode == EEXIST:  # made meanwhile by another host
                    made = False
                elif done.returncode != 0:
                    made = False  # rbd rolls back a create that fails (not one that is killed)
                    raise _failure(done, "rbd create")
            except BaseException as exc:
                if made:
                    await self._remove_quietly(volume.pool, conn, spec)
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def create_from(self, volume: VolumeRef, source: Path, source_format: str) -> None:
        """Make ``<name>.part`` (``volume.size_gb``, thin), write the local image ``source``
        into it with ``qemu-img convert -n`` (QEMU's rbd driver; the key in a ``secret`` object
        read from the keyfile), then ``rbd rename`` it; an existing image is kept. The ``.part``
        is removed if the call fails or is cancelled (``copy_timeout``: seconds for the copy)."""
        fmt = check_source_format(volume, source_format)
        conn, spec = self._where(volume)
        part = spec + PART_SUFFIX
        async with self._locks.hold(spec):
            made = False
            try:
                if await self._size(volume, conn, spec) is not None:
                    return
                out = await run_tool(
                    [self.qemu_img, "info", "--output=json", "-U", "-f", fmt, str(source)]
                )
                virtual_size = _json_int(out.stdout, "virtual-size", "qemu-img info")
                check_fits(volume, virtual_size)
                made = True
                await self._remove_quietly(volume.pool, conn, part)  # left by a crash
                size = str(volume.size_gb * GIB // MIB)
                done = await self._rbd(volume.pool, conn, "create", "--size", size, part)
                if done.returncode != 0:
                    raise _failure(done, "rbd create")
                await self._copy(volume.pool, conn, source, fmt, part.split("/", 1)[1])
                done = await self._rbd(volume.pool, conn, "rename", part, spec)
                if done.returncode == EEXIST:  # made meanwhile by another host: keep that one
                    await self._remove_quietly(volume.pool, conn, part)
                    made = False
                elif done.returncode != 0:
                    raise _failure(done, "rbd rename")
                made = False
            except BaseException as exc:
                if made:
                    await self._remove_quietly(volume.pool, conn, part)
                if isinstance(exc, Exception):
                    raise volume_error("create", volume, exc) from exc
                raise

    async def _copy(self, pool: PoolRef, conn: _Conn, source: Path, fmt: str, image: str) -> None:
        """``qemu-img convert -n`` of ``source`` into the existing (zero) RBD ``image``."""

        def args(opts: str) -> list[str]:
            options = ["-q", "-n", "--target-is-zero", "-f", fmt]
            return [*options, "--target-image-opts", str(source), opts]

        await self._convert(pool, conn, image, args)

    async def export(self, volume: VolumeRef, name: str, dest: Path) -> None:
        """``qemu-img convert -O qcow2`` of the RBD image ``name`` (raw, opened with
        ``--image-opts`` as ``create_from`` opens its target) into ``dest`` (see
        ``VolumeBackend.export``), within ``copy_timeout``. No lock stops an image a running VM
        writes (see the module docstring)."""
        conn, spec = self._where(volume.model_copy(update={"name": name}))

        async def convert(part: Path) -> None:
            if await self._size(volume, conn, spec) is None:
                raise StorageError(f"image {spec} does not exist", reason="not_found")

            def args(opts: str) -> list[str]:
                return ["-q", "--image-opts", opts, "-O", "qcow2", str(part)]

            await self._convert(volume.pool, conn, name, args)

        async with self._locks.hold(spec):
            try:
                await write_new(dest, convert)
            except Exception as exc:
                raise volume_error("export", volume, exc) from exc

    async def _convert(
        self, pool: PoolRef, conn: _Conn, image: str, args: Callable[[str], Sequence[str]]
    ) -> None:
        """Run ``qemu-img convert --object secret… <args(opts)>`` within ``copy_timeout``,
        ``opts`` being the ``--image-opts`` of the RBD ``image`` (``_image_opts``, the key in
        the secret object read from a temporary keyfile, deleted afterwards)."""
        tmp = await asyncio.to_thread(_key_dir, conn.key, self.tmp_dir)
        try:
            argv = [self.qemu_img, "convert"]
            argv += ["--object", f"secret,id={_SECRET_ID},file={tmp / 'key'},format=base64"]
            argv += args(_image_opts(conn, image, tmp))
            try:
                await run_tool(argv, timeout=self.copy_timeout, secrets=[conn.key])
            except StorageError as exc:
                exc.context["pool_id"] = pool.id
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # inline: survives cancellation

    async def delete(self, volume: VolumeRef) -> None:
        """Remove the image with its snapshots; absent is success. ``rbd rm`` first; if Ceph
        refuses because the image has snapshots, its watchers are checked (any: ``in_use``, the
        snapshots kept), its protected snapshots unprotected, all of them removed (``rbd snap
        purge``), and ``rbd rm`` runs again. ``StorageError`` with ``reason`` ``in_use`` (a client
        still has it open) or ``has_snapshots`` (a snapshot Ceph keeps: clones depend on it, or
        one was made meanwhile); an error past the purge leaves the image without snapshots."""
        conn, spec = self._where(volume)
        async with self._locks.hold(spec):
            try:
                done = await self._rbd(volume.pool, conn, "rm", "--no-progress", spec)
                if done.returncode == ENOTEMPTY:
                    await self._purge(volume.pool, conn, spec)
                    done = await self._rbd(volume.pool, conn, "rm", "--no-progress", spec)
                if done.returncode in (0, ENOENT):
                    return
                if done.returncode == EBUSY:
                    raise _in_use(spec, "deleted", returncode=done.returncode)
                if done.returncode == ENOTEMPTY:
                    raise StorageError(
                        f"image {spec} still has snapshots (made meanwhile, or kept by Ceph for"
                        " clones of it); remove them first",
                        reason="has_snapshots",
                        returncode=done.returncode,
                    )
                raise _failure(done, "rbd rm")
            except Exception as exc:
                raise volume_error("delete", volume, exc) from exc

    async def _purge(self, pool: PoolRef, conn: _Conn, spec: str) -> None:
        """Remove every snapshot of the image ``spec`` for ``delete``, unless a client has it
        open (``in_use``: nothing removed) or a protected one cannot be unprotected
        (``has_snapshots``: clones depend on it; nothing removed)."""
        watchers = await self._watchers(pool, conn, spec)
        if watchers is None:  # removed meanwhile
            return
        if watchers:
            raise _in_use(spec, "deleted", watchers=watchers)
        snaps = await self._snaps(pool, conn, spec)
        for name, protected in (snaps or {}).items():
            if protected:
                await self._unprotect(pool, conn, f"{spec}@{name}", "has_snapshots")
        done = await self._rbd(pool, conn, "snap", "purge", "--no-progress", spec)
        if done.returncode not in (0, ENOENT):
            raise _failure(done, "rbd snap purge")

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """Grow the image to ``size_gb``; already that size or larger: nothing. ``StorageError``
        (context ``reason="not_found"``) if the image does not exist."""
        conn, spec = self._where(volume)
        async with self._locks.hold(spec):
            try:
                size = await self._size(volume, conn, spec)
                if size is None:
                    raise StorageError(f"image {spec} does not exist", reason="not_found")
                if size >= size_gb * GIB:
                    return
                mib = str(size_gb * GIB // MIB)
                args = ("resize", "--no-progress", "--size", mib, spec)
                done = await self._rbd(volume.pool, conn, *args)
                if done.returncode != 0:
                    raise _failure(done, "rbd resize")
            except Exception as exc:
                raise volume_error("resize", volume, exc) from exc

    def source(self, volume: VolumeRef) -> DiskSource:
        conn, spec = self._where(volume)
        return DiskSource(
            kind="network",
            protocol="rbd",
            name=spec,
            hosts=conn.monitors,
            format="raw",
            auth=DiskAuth(
                type="ceph", username=conn.settings.user, secret=conn.key, pool_id=volume.pool.id
            ),
        )

    async def prepare(self, pool: PoolRef) -> None:
        """Nothing to make (images are created in the existing RBD pool); the settings and
        credentials are checked without connecting."""
        self._conn(pool)

    async def usage(self, pool: PoolRef) -> PoolUsage:
        """The pool's space as ``ceph df`` reports it: ``free`` is its ``max_avail`` (what can
        still be written, replication accounted for), ``total`` that plus what is ``stored``."""
        conn = self._conn(pool)
        args = ("--connect-timeout", self._ct(), "df", "-f", "json")
        done = await self._run(pool, conn, self.ceph, *args)
        try:
            if done.returncode != 0:
                raise _failure(done, "ceph df")
            stats = _pool_stats(done.stdout, conn.settings.pool)
            stored, free = int(stats["stored"]), int(stats["max_avail"])
        except StorageError as exc:
            raise StorageError(
                f"cannot get the usage of pool {pool.id}: {exc.message}",
                **{**exc.context, "pool_id": pool.id},
            ) from exc
        return PoolUsage(total_gb=(stored + free) / GIB, free_gb=free / GIB)

    # --- Ceph's own snapshots (``RbdSnapshots``) --------------------------------------------

    async def snap_create(self, volume: VolumeRef, snap: str) -> None:
        """Snapshot the image as ``snap`` (``rbd snap create <pool>/<image>@<snap>``: Ceph's
        copy-on-write, crash-consistent if a client writes meanwhile); an existing snapshot of
        that name is success (kept as it is). ``StorageError`` (``reason="not_found"``) if the
        image does not exist; ``InvalidInput`` for a name other than 1-64 of ``A-Za-z0-9_-``."""
        conn, spec = self._where(volume)
        target = _snap_spec(volume, spec, snap)
        async with self._locks.hold(spec):
            try:
                args = ("snap", "create", "--no-progress", target)
                done = await self._rbd(volume.pool, conn, *args)
                if done.returncode in (0, EEXIST):
                    return
                if done.returncode == ENOENT:
                    raise _not_found(f"image {spec}", returncode=done.returncode)
                raise _failure(done, "rbd snap create")
            except Exception as exc:
                raise _snap_error(f"create snapshot {snap} of", volume, snap, exc) from exc

    async def snap_rollback(self, volume: VolumeRef, snap: str) -> None:
        """Make the image's data the snapshot ``snap``'s (``rbd snap rollback --no-progress``;
        the other snapshots are kept). Running it again is harmless: an interrupted rollback
        leaves a mix of old and new data until it is repeated.

        No client may have the image open. Ceph itself only refuses (EROFS, or EBUSY) when a
        client holds the image's exclusive lock, so the image's watchers (``rbd status``) are
        checked first: any client there, or Ceph refusing, is a ``StorageError`` with
        ``reason="in_use"`` and nothing rolled back. A client opening the image between the
        check and the rollback is not seen: the caller keeps the VM stopped. A missing image
        or snapshot: ``reason="not_found"``."""
        conn, spec = self._where(volume)
        target = _snap_spec(volume, spec, snap)
        async with self._locks.hold(spec):
            try:
                watchers = await self._watchers(volume.pool, conn, spec)
                if watchers is None:
                    raise _not_found(f"image {spec}")
                if watchers:
                    raise _in_use(spec, "rolled back", watchers=watchers)
                args = ("snap", "rollback", "--no-progress", target)
                done = await self._rbd(volume.pool, conn, *args)
                if done.returncode == 0:
                    return
                if done.returncode == ENOENT:
                    raise _not_found(f"snapshot {target}", returncode=done.returncode)
                if done.returncode in (EBUSY, EROFS):
                    raise _in_use(spec, "rolled back", returncode=done.returncode)
                raise _failure(done, "rbd snap rollback")
            except Exception as exc:
                raise _snap_error("roll back", volume, snap, exc) from exc

    async def snap_remove(self, volume: VolumeRef, snap: str) -> None:
        """Remove the snapshot ``snap``, unprotected first if it is protected (``rbd snap
        unprotect``, then ``rbd snap rm``); an absent snapshot or image is success.
        ``StorageError`` with ``reason="has_clones"`` when Ceph refuses to unprotect it (clones
        of it exist)."""
        conn, spec = self._where(volume)
        target = _snap_spec(volume, spec, snap)
        async with self._locks.hold(spec):
            try:
                snaps = await self._snaps(volume.pool, conn, spec)
                if snaps is None or snap not in snaps:
                    return
                if snaps[snap]:
                    await self._unprotect(volume.pool, conn, target, "has_clones")
                done = await self._rbd(volume.pool, conn, "snap", "rm", "--no-progress", target)
                if done.returncode not in (0, ENOENT):
                    raise _failure(done, "rbd snap rm")
            except Exception as exc:
                raise _snap_error(f"remove snapshot {snap} of", volume, snap, exc) from exc

    async def allocated(self, volume: VolumeRef, name: str) -> int | None:
        """What the image ``name`` itself takes in the pool (``rbd du``: the ``used_size`` of
        its head, written since its newest snapshot, or since it was made); None (logged) when
        that cannot be measured (see ``VolumeBackend.allocated``)."""
        try:
            conn, spec = self._where(volume.model_copy(update={"name": name}))
            entries = await self._du(volume.pool, conn, spec)
            head = [e for e in entries if not e.get("snapshot")]
            return _used(head[-1] if head else None)
        except (CorralError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot measure image %s of volume %s: %s", name, volume.volume_id, exc)
            return None

    async def snap_allocated(self, volume: VolumeRef, snap: str) -> int | None:
        """What the Ceph snapshot ``snap`` takes in the pool: ``rbd du --format json
        <pool>/<image>@<snap>``'s ``used_size`` (what was written between the image's snapshot
        before it and it; quick with the ``fast-diff`` feature Ceph gives new images, a scan of
        the image's objects without). None (logged) when it cannot be measured: a missing image
        or snapshot, a tool failure, an unsafe name."""
        try:
            conn, spec = self._where(volume)
            target = _snap_spec(volume, spec, snap)
            entries = await self._du(volume.pool, conn, target)
            mine = [e for e in entries if e.get("snapshot") == snap]
            return _used(mine[0] if mine else None)
        except (CorralError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot measure snapshot %s of volume %s: %s", snap, volume.volume_id, exc)
            return None

    async def snap_sizes(self, volume: VolumeRef) -> dict[str, int]:
        """``rbd du --format json <pool>/<image>``'s ``used_size`` of each snapshot (see
        ``RbdSnapshots.snap_sizes``); ``{}`` (logged) when it cannot be measured."""
        try:
            conn, spec = self._where(volume)
            entries = await self._du(volume.pool, conn, spec)
            return {str(e["snapshot"]): _used(e) for e in entries if e.get("snapshot")}
        except (CorralError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot measure the snapshots of volume %s: %s", volume.volume_id, exc)
            return {}

    async def _du(self, pool: PoolRef, conn: _Conn, target: str) -> list[dict[str, Any]]:
        """The ``images`` entries of ``rbd du --format json <target>`` (an image: one per
        snapshot and one for the head; ``<image>@<snap>``: that snapshot's)."""
        done = await self._rbd(pool, conn, "du", "--format", "json", target)
        if done.returncode == ENOENT:
            raise _not_found(target, returncode=done.returncode)
        if done.returncode != 0:
            raise _failure(done, "rbd du")
        entries = json.loads(done.stdout)["images"]
        if not isinstance(entries, list):
            raise TypeError("rbd du: images is not a list")
        return [e for e in entries if isinstance(e, dict)]

    async def create_on_image(
        self, volume: VolumeRef, image_id: str, source: Path, source_format: str
    ) -> None:
        """The volume as a Ceph copy-on-write clone of the pool's copy of the image: the image
        ``corral-image-<image_id>`` (written once per pool from ``source``, the host's checked
        cache copy) with its protected snapshot ``base``; grown to ``volume.size_gb``. However
        many volumes are made from the image, the pool holds it once (the base stays while a
        clone exists). Existing volume: kept as it is."""
        fmt = check_source_format(volume, source_format)
        out = await run_tool([self.qemu_img, "info", "--output=json", "-U", "-f", fmt, str(source)])
        virtual_size = _json_int(out.stdout, "virtual-size", "qemu-img info")
        check_fits(volume, virtual_size)
        base = volume.model_copy(
            update={
                "volume_id": f"image-{safe_image_id(image_id)}",
                "name": f"{BASE_PREFIX}{image_id}",
                "size_gb": max(1, -(-virtual_size // GIB)),
            }
        )
        await self.create_from(base, source, fmt)
        await self.snap_create(base, BASE_SNAP)
        await self.snap_clone(base, BASE_SNAP, volume)

    async def forget_image(self, pool: PoolRef, image_id: str) -> None:
        """Remove the base image ``corral-image-<image_id>`` and its ``base`` snapshot;
        absent: success. ``StorageError`` ``reason="has_clones"`` while volumes are its
        clones."""
        base = VolumeRef(
            volume_id=f"image-{safe_image_id(image_id)}",
            pool=pool,
            name=f"{BASE_PREFIX}{image_id}",
            size_gb=1,
            format="raw",
        )
        await self.snap_remove(base, BASE_SNAP)
        await self.delete(base)

    async def snap_clone(self, volume: VolumeRef, snap: str, target: VolumeRef) -> None:
        """Make the image ``target.name`` (same pool) a Ceph copy-on-write clone of the snapshot
        ``snap`` (protected first: ``rbd snap protect``, then ``rbd clone``), grown to
        ``target.size_gb`` if that is bigger. The snapshot cannot be removed while the clone
        exists (``snap_remove``: ``has_clones``). An existing target is success (kept as it
        is). ``StorageError`` ``reason="not_found"`` for a missing image or snapshot."""
        conn, spec = self._where(volume)
        source = _snap_spec(volume, spec, snap)
        _, clone = self._where(target)
        async with self._locks.hold(clone):
            try:
                snaps = await self._snaps(volume.pool, conn, spec)
                if snaps is None or snap not in snaps:
                    raise _not_found(f"snapshot {source}")
                if not snaps[snap]:
                    done = await self._rbd(volume.pool, conn, "snap", "protect", source)
                    if done.returncode not in (0, EBUSY):  # EBUSY: protected meanwhile
                        raise _failure(done, "rbd snap protect")
                done = await self._rbd(volume.pool, conn, "clone", source, clone)
                if done.returncode not in (0, EEXIST):
                    raise _failure(done, "rbd clone")
            except Exception as exc:
                raise _snap_error(f"clone snapshot {snap} of", volume, snap, exc) from exc
        await self.resize(target, target.size_gb)

    async def _snaps(self, pool: PoolRef, conn: _Conn, spec: str) -> dict[str, bool] | None:
        """The image's snapshots (user namespace) as {name: protected}; None if it is absent."""
        done = await self._rbd(pool, conn, "snap", "ls", "--format", "json", spec)
        if done.returncode == ENOENT:
            return None
        if done.returncode != 0:
            raise _failure(done, "rbd snap ls")
        try:
            entries: list[dict[str, Any]] = json.loads(done.stdout)
            return {str(e["name"]): str(e["protected"]).lower() == "true" for e in entries}
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                "unexpected output of rbd snap ls", output=done.stdout[:2000]
            ) from exc

    async def _watchers(self, pool: PoolRef, conn: _Conn, spec: str) -> int | None:
        """How many clients have the image open (``rbd status``); None if it is absent. A
        client that died keeps its watch for up to 30 s."""
        done = await self._rbd(pool, conn, "status", "--format", "json", spec)
        if done.returncode == ENOENT:
            return None
        if done.returncode != 0:
            raise _failure(done, "rbd status")
        try:
            return len(json.loads(done.stdout)["watchers"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                "unexpected output of rbd status", output=done.stdout[:2000]
            ) from exc

    async def _unprotect(self, pool: PoolRef, conn: _Conn, target: str, busy_reason: str) -> None:
        """``rbd snap unprotect`` of the snapshot ``target``; already unprotected or absent is
        success, clones of it (EBUSY) a ``StorageError`` with ``reason=busy_reason``."""
        done = await self._rbd(pool, conn, "snap", "unprotect", target)
        if done.returncode in (0, EINVAL, ENOENT):
            return
        if done.returncode == EBUSY:
            raise StorageError(
                f"snapshot {target} is protected and has clones (rbd children): Ceph keeps it",
                reason=busy_reason,
                returncode=done.returncode,
            )
        raise _failure(done, "rbd snap unprotect")

    # --- external (qcow2) snapshots: RBD has its own (above) -------------------------------

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        raise _no_snapshots(volume)

    async def rebase(self, volume: VolumeRef, name: str, backing_name: str | None) -> None:
        raise _no_snapshots(volume)

    async def delete_file(self, volume: VolumeRef, name: str) -> None:
        raise _no_snapshots(volume)

    async def backing_of(self, volume: VolumeRef, name: str) -> str | None:
        raise _no_snapshots(volume)

    # --- helpers ----------------------------------------------------------------------------

    def _where(self, volume: VolumeRef) -> tuple[_Conn, str]:
        conn = self._conn(volume.pool)
        if not _IMAGE.match(volume.name):
            raise InvalidInput(
                f"invalid RBD image name {volume.name!r}",
                pool_id=volume.pool.id,
                volume_id=volume.volume_id,
                name=volume.name,
            )
        if volume.format != "raw":
            raise InvalidInput(
                f"RBD volumes are raw, not {volume.format}",
                pool_id=volume.pool.id,
                volume_id=volume.volume_id,
                format=volume.format,
            )
        return conn, f"{conn.settings.pool}/{volume.name}"

    def _conn(self, pool: PoolRef) -> _Conn:
        settings = pool_settings(pool, RbdSettings)
        if not pool.credentials:
            raise InvalidInput(
                f"rbd pool {pool.id} has no credentials (the cephx key of client.{settings.user})",
                pool_id=pool.id,
            )
        return _Conn(
            settings, pool.credentials.strip(), tuple(map(parse_monitor, settings.monitors))
        )

    def _ct(self) -> str:
        return f"{max(1, round(self.connect_timeout))}"

    async def _size(self, volume: VolumeRef, conn: _Conn, spec: str) -> int | None:
        """The image's size in bytes, None if it does not exist."""
        done = await self._rbd(volume.pool, conn, "info", "--format", "json", spec)
        if done.returncode == ENOENT:
            return None
        if done.returncode != 0:
            raise _failure(done, "rbd info")
        try:
            return int(json.loads(done.stdout)["size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError("unexpected output of rbd info", output=done.stdout[:2000]) from exc

    async def _rbd(self, pool: PoolRef, conn: _Conn, *args: str) -> ToolResult:
        return await self._run(pool, conn, self.rbd, "--client_mount_timeout", self._ct(), *args)

    async def _run(
        self, pool: PoolRef, conn: _Conn, tool: str, *args: str, timeout: float | None = None
    ) -> ToolResult:
        """Run ``tool`` against the cluster with a temporary keyfile; the result whatever the
        exit status (``StorageError`` if it cannot start or times out)."""
        tmp = await asyncio.to_thread(_key_dir, conn.key, self.tmp_dir)
        try:
            argv = [tool, "-c", str(tmp / "ceph.conf"), "-m", conn.mon_arg]
            argv += ["--id", conn.settings.user, "--keyfile", str(tmp / "key"), *args]
            try:
                return await run_tool(
                    argv,
                    timeout=self.timeout if timeout is None else timeout,
                    check=False,
                    secrets=[conn.key],
                )
            except StorageError as exc:
                exc.context["pool_id"] = pool.id
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # inline: survives cancellation

    async def _remove_quietly(self, pool: PoolRef, conn: _Conn, spec: str) -> None:
        """Best effort, within 10 s: remove an image a failed create may have left."""
        try:
            args = ("--client_mount_timeout", "5", "rm", "--no-progress", spec)
            await self._run(pool, conn, self.rbd, *args, timeout=min(self.timeout, 10.0))
        except Exception:
            pass


def _image_opts(conn: _Conn, image: str, key_dir: Path) -> str:
    """QEMU's ``--image-opts`` for the RBD ``image`` of the pool: raw over the rbd driver, the
    monitors, the empty ``ceph.conf`` of ``key_dir`` and the user, whose key is the secret
    object ``_SECRET_ID`` (the key itself is never in the options)."""
    opts = [
        "driver=raw",
        "file.driver=rbd",
        f"file.pool={conn.settings.pool}",
        f"file.image={image}",
        f"file.conf={key_dir / 'ceph.conf'}",
        f"file.user={conn.settings.user}",
        f"file.key-secret={_SECRET_ID}",
    ]
    for i, (host, port) in enumerate(conn.monitors):
        opts += [f"file.server.{i}.host={host}", f"file.server.{i}.port={port}"]
    return ",".join(opts)


def _snap_spec(volume: VolumeRef, spec: str, snap: str) -> str:
    """``<pool>/<image>@<snap>``; ``InvalidInput`` for a snapshot name other than 1-64 of
    ``A-Za-z0-9_-`` (the task's own rule, checked again before it reaches a command line)."""
    if not _SNAP.match(snap):
        raise InvalidInput(
            f"invalid RBD snapshot name {snap!r} (1-64 of A-Za-z0-9_-)",
            pool_id=volume.pool.id,
            volume_id=volume.volume_id,
            snap=snap,
        )
    return f"{spec}@{snap}"


def _snap_error(action: str, volume: VolumeRef, snap: str, exc: BaseException) -> CorralError:
    """``volume_error`` for ``action`` (``cannot <action> volume <id>: …``), a
    ``StorageError``'s context also naming the snapshot."""
    err = volume_error(action, volume, exc)
    if isinstance(err, StorageError):
        err.context["snap"] = snap
    return err


def _not_found(what: str, **context: Any) -> StorageError:
    return StorageError(f"{what} does not exist", reason="not_found", **context)


def _in_use(spec: str, done: str, **context: Any) -> StorageError:
    """The image is open by a client (Ceph's answer, or watchers ``rbd status`` lists)."""
    return StorageError(
        f"image {spec} is still open by a client (a running VM?); it can be {done} once that"
        " client closes it or has been gone for 30 s",
        reason="in_use",
        **context,
    )


def _no_snapshots(volume: VolumeRef) -> InvalidInput:
    return InvalidInput(
        SNAPSHOTS_UNSUPPORTED, pool_id=volume.pool.id, volume_id=volume.volume_id, type="rbd"
    )


def parse_monitor(monitor: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host without brackets, port);
    the port defaults to 6789."""
    if monitor.startswith("["):
        host, _, rest = monitor[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = monitor.partition(":")
    return host, int(port) if port else MON_PORT


def _failure(done: ToolResult, what: str) -> StorageError:
    """A failed ``rbd``/``ceph`` run as a ``StorageError`` with the tool's own message (its log
    noise dropped) and a ``reason`` for the connection failures."""
    message = _message(done.stderr) or f"exit status {done.returncode}"
    context: dict[str, Any] = {"returncode": done.returncode, "stderr": done.stderr}
    if done.returncode == EACCES or "permission denied" in message.lower():
        context["reason"] = "auth"
        message += " (wrong cephx key or user, or missing caps)"
    elif done.returncode == ETIMEDOUT or message.endswith("timed out"):
        context["reason"] = "unreachable"
        message += " (monitors unreachable, or the cephx key or user is wrong)"
    return StorageError(f"{what} failed: {message}", **context)


def _message(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    own = [ln for ln in lines if ln.startswith(("rbd:", "Error", "[errno"))]
    if own:
        return "; ".join(own)
    plain = [ln for ln in lines if not _LOG_LINE.match(ln)]
    return plain[-1] if plain else (lines[-1] if lines else "")


def _used(entry: dict[str, Any] | None) -> int:
    """The ``used_size`` of an ``rbd du`` entry; ``KeyError`` without one."""
    if entry is None:
        raise KeyError("rbd du lists no such entry")
    size = entry["used_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TypeError(f"rbd du: used_size {size!r}")
    return size


def _json_int(out: str, key: str, what: str) -> int:
    try:
        return int(json.loads(out)[key])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"unexpected output of {what}", output=out[:2000]) from exc


def _pool_stats(out: str, pool: str) -> dict[str, Any]:
    try:
        pools: Sequence[dict[str, Any]] = json.loads(out)["pools"]
        for entry in pools:
            if entry["name"] == pool:
                return dict(entry["stats"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError("unexpected output of ceph df", output=out[:2000]) from exc
    raise StorageError(f"ceph df does not list pool {pool}", reason="not_found")


def _key_dir(key: str, parent: Path | None) -> Path:
    """A new 0700 directory with ``key`` (0600) and an empty ``ceph.conf``."""
    path = Path(tempfile.mkdtemp(prefix="corral-rbd-", dir=parent))
    try:
        fd = os.open(path / "key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        (path / "ceph.conf").write_text("")
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path
