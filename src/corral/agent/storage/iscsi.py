"""Data volumes of ``iscsi`` pools: the LUNs of one iSCSI target, used whole as raw volumes.

The storage admin provisions the LUNs on the target; Corral never creates, grows or removes one.
A volume's ``VolumeRef.name`` is its LUN number (chosen by the server among the pool's free
LUNs), as the admin numbered it on the target. Every call connects with the pool's settings
alone (``portal`` host[:port], 3260 when absent; ``iqn``) and, when ``pool.credentials`` is set,
CHAP ``user:secret`` (split at the first ``:``, so the user name has none): one-way CHAP, the
initiator authenticating to the target. The secret is never on a command line, in an error or a
log: ``qemu-img``/``qemu-io`` read it from a temporary 0600 file (a ``secret`` object, deleted
when the call ends), the inventory helper from its stdin.

Nothing is logged in through the kernel (these hosts have no open-iscsi, and none is needed):
every access is a userspace libiscsi session, the client QEMU itself uses for the VMs' disks.

- Inventory (``luns``, ``prepare``, ``usage`` and the existence and size checks): REPORT LUNS,
  then INQUIRY and READ CAPACITY of each LUN, through libiscsi with ctypes in a child process
  (``libiscsi.py``; with a timeout, killed on cancel). Why not ``qemu-img info`` of LUN 1, 2, …
  until one fails: one connection per LUN, and it stops at the first gap (LUNs 1, 2, 5) or
  never ends on a target that numbers them sparsely; REPORT LUNS is what the target itself says
  it has, in one session. Why not ``iscsi-ls``: libiscsi-bin is not installed (only the library,
  a dependency of QEMU's iSCSI driver). Limits: only direct-access LUNs (disks) are listed,
  numbered 0-16383 in peripheral or flat addressing (see ``libiscsi``), so tgtd's LUN 0 (its
  controller) is not; the helper relies on libiscsi 1.x's public structures (the unmarshalled
  REPORT LUNS, INQUIRY and READ CAPACITY data and the task's leading ``status``), stable across
  1.x releases but read without headers.
- Data (``create_from``, ``delete``, ``export``): ``qemu-img``/``qemu-io`` with ``--image-opts``
  (``driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=…,file.target=…,file.lun=…``,
  the CHAP user and ``file.password-secret``).
- VMs: ``source`` gives libvirt ``<source protocol='iscsi' name='<iqn>/<lun>'>`` with the
  portal's host and port and, with CHAP, ``<auth>`` naming the pool's libvirt secret (usage type
  ``iscsi``). LUNs 256 and above are addressed as libiscsi and QEMU want them (flat addressing:
  LUN 300 is ``<iqn>/16684``, as Linux numbers it too).

What a LUN volume is: the guest sees the whole LUN, whatever ``size_gb`` says (which the LUN
must hold). ``create`` only checks that the LUN exists and is big enough: it does not write it.
``delete`` zeroes the whole LUN (``qemu-io write -z -u``: WRITE SAME with UNMAP where the target
can thin-provision, so it is quick there; else QEMU writes zeros over all of it, at the target's
write speed), so a LUN goes back to the pool's free LUNs without its last tenant's data; a LUN
is thus clean only if it was clean when the admin provisioned it, and ``create_from`` writes
only the image's virtual size (the rest keeps what the LUN held). ``resize`` cannot grow a LUN:
it succeeds if the LUN is already that big. No lock protects a LUN: iSCSI has none QEMU uses,
so nothing stops ``delete`` or ``create_from`` of a LUN a running VM uses, nor two hosts using
one LUN at once; the server must never ask for that. Which LUNs are taken is the server's
business: ``usage`` reports every LUN as free. The initiator name of the agent's sessions is
``INITIATOR``; QEMU names a VM's sessions ``iqn.2008-11.org.linux-kvm:<domain UUID>`` (seen on
tgtd), so a target that filters initiators by name cannot know them in advance: let hosts in by
address, and use CHAP.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.agent.storage import libiscsi
from corral.agent.storage.backend import (
    DiskAuth,
    DiskSource,
    PoolUsage,
    check_fits,
    check_source_format,
)
from corral.agent.storage.common import GIB, KeyedLocks, pool_settings, volume_error
from corral.agent.storage.dirpool import write_new
from corral.agent.storage.qemu_img import QEMU_IMG
from corral.agent.storage.tools import run_tool
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InvalidInput, StorageError
from corral.api.storage import IscsiSettings

ISCSI_PORT = 3260
INITIATOR = "iqn.2008-11.org.linux-kvm:corral-agent"
"""The initiator name of the agent's own sessions (inventory, qemu-img, qemu-io)."""
ZERO_CHUNK = 1 << 30
"""Bytes per ``qemu-io write -z`` command (one request may not exceed 2 GiB)."""
_SECRET_ID = "sec0"
_LUN = re.compile(r"^(0|[1-9][0-9]{0,4})$")
_NO_SNAPSHOTS = "iSCSI volumes are whole raw LUNs: they have no snapshot files"


@dataclass(frozen=True)
class _Conn:
    """What one call needs to reach the target."""

    settings: IscsiSettings
    host: str  # without the brackets of an IPv6 literal
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def portal(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def where(self) -> str:
        return f"{self.settings.iqn} on {self.portal}"


class IscsiBackend:
    """A ``VolumeBackend`` for ``iscsi`` pools (see the module docstring).

    ``timeout``: seconds allowed to each inventory and ``qemu-img info``; ``copy_timeout`` to a
    copy (``create_from``, ``export``) and to zeroing a LUN (``delete``).
    """

    def __init__(
        self,
        *,
        qemu_img: str = QEMU_IMG,
        qemu_io: str = "qemu-io",
        python: str = sys.executable,
        initiator: str = INITIATOR,
        timeout: float = 120.0,
        copy_timeout: float = 3600.0,
        tmp_dir: Path | None = None,
    ) -> None:
        self.qemu_img = qemu_img
        self.qemu_io = qemu_io
        self.python = python
        self.initiator = initiator
        self.timeout = timeout
        self.copy_timeout = copy_timeout
        self.tmp_dir = tmp_dir
        self._locks = KeyedLocks()

    # --- the target's LUNs ------------------------------------------------------------------

    async def luns(self, pool: PoolRef) -> list[tuple[int, int]]:
        """The target's LUNs as (LUN number, size in bytes), by number: its direct-access LUNs
        (tgtd's LUN 0, its controller, is not one). ``StorageError`` (context ``pool_id``,
        ``reason``: ``unreachable``, ``auth``, ``not_found``…) when the target cannot be asked."""
        found = await self._inventory(pool, self._conn(pool))
        return sorted(found.items())

    async def prepare(self, pool: PoolRef) -> None:
        """Nothing to make (the admin provisions the LUNs): log in to the target and list its
        LUNs, so a wrong portal, IQN or CHAP secret shows at once (``StorageError``)."""
        await self.luns(pool)

    async def usage(self, pool: PoolRef) -> PoolUsage:
        """``total``: the sum of the LUNs' sizes. ``free`` is the same: which LUNs volumes use
        is the server's business (it chooses a free LUN for each volume), not the target's."""
        try:
            total = sum(size for _, size in await self.luns(pool))
        except StorageError as exc:
            raise StorageError(
                f"cannot get the usage of pool {pool.id}: {exc.message}",
                **{**exc.context, "pool_id": pool.id},
            ) from exc
        return PoolUsage(total_gb=total / GIB, free_gb=total / GIB)

    # --- volumes ----------------------------------------------------------------------------

    async def create(self, volume: VolumeRef) -> None:
        """Check that the LUN exists (``StorageError``, ``reason="not_found"``) and holds
        ``volume.size_gb`` (``reason="too_small"``); the LUN is not written."""
        conn, lun = self._where(volume)
        async with self._locks.hold(self._key(conn, lun)):
            try:
                await self._usable_size(volume, conn, lun)
            except Exception as exc:
                raise volume_error("create", volume, exc) from exc

    async def create_from(self, volume: VolumeRef, source: Path, source_format: str) -> None:
        """Check the LUN as ``create`` does and that the image fits ``volume.size_gb``, then
        ``qemu-img convert -n`` the local image ``source`` into the LUN (raw), within
        ``copy_timeout``. The LUN always exists, so a repeated call copies the image again;
        a failed one leaves the LUN partly written (its ``delete`` zeroes it)."""
        fmt = check_source_format(volume, source_format)
        conn, lun = self._where(volume)
        async with self._locks.hold(self._key(conn, lun)):
            try:
                await self._usable_size(volume, conn, lun)
                out = await run_tool(
                    [self.qemu_img, "info", "--output=json", "-U", "-f", fmt, str(source)],
                    timeout=self.timeout,
                )
                check_fits(volume, _virtual_size(out.stdout))
                await self._qemu(
                    volume.pool,
                    conn,
                    [self.qemu_img, "convert", "-q", "-n", "-f", fmt],
                    ["--target-image-opts", str(source), self._image_opts(conn, lun)],
                )
            except Exception as exc:
                raise volume_error("create", volume, exc) from exc

    async def delete(self, volume: VolumeRef) -> None:
        """Zero the whole LUN, unmapping where the target can (``qemu-io write -z -u``, in
        ``ZERO_CHUNK`` requests, within ``copy_timeout``), so its data cannot reach the next
        volume put on it. A LUN the target does not have: nothing (success)."""
        conn, lun = self._where(volume)
        async with self._locks.hold(self._key(conn, lun)):
            try:
                size = (await self._inventory(volume.pool, conn, [lun])).get(lun)
                if size is None:
                    return
                commands: list[str] = []
                for offset in range(0, size, ZERO_CHUNK):
                    count = min(ZERO_CHUNK, size - offset)
                    commands += ["-c", f"write -q -z -u {offset} {count}"]
                commands += ["-c", "flush"]
                await self._qemu(
                    volume.pool,
                    conn,
                    [self.qemu_io, *commands],
                    ["--image-opts", self._image_opts(conn, lun)],
                )
            except Exception as exc:
                raise volume_error("delete", volume, exc) from exc

    async def resize(self, volume: VolumeRef, size_gb: int) -> None:
        """A LUN cannot grow: success if it already holds ``size_gb``, else ``InvalidInput``
        (context ``reason="lun_size"``, ``lun_size_bytes``). ``StorageError``
        (``reason="not_found"``) if the target has no such LUN."""
        conn, lun = self._where(volume)
        async with self._locks.hold(self._key(conn, lun)):
            try:
                size = await self._size(volume, conn, lun)
                if size >= size_gb * GIB:
                    return
                raise InvalidInput(
                    f"LUN {lun} of {conn.where()} holds {size / GIB:.2f} GiB, not {size_gb} GiB:"
                    " an iSCSI LUN cannot grow (the storage admin can grow it on the target)",
                    pool_id=volume.pool.id,
                    volume_id=volume.volume_id,
                    reason="lun_size",
                    lun=lun,
                    lun_size_bytes=size,
                    size_gb=size_gb,
                )
            except Exception as exc:
                raise volume_error("resize", volume, exc) from exc

    def source(self, volume: VolumeRef) -> DiskSource:
        conn, lun = self._where(volume)
        auth = None
        if conn.user is not None and conn.password is not None:
            auth = DiskAuth(
                type="iscsi", username=conn.user, secret=conn.password, pool_id=volume.pool.id
            )
        return DiskSource(
            kind="network",
            protocol="iscsi",
            format="raw",
            name=f"{conn.settings.iqn}/{libiscsi.lun_address(lun)}",
            hosts=((conn.host, conn.port),),
            auth=auth,
        )

    async def export(self, volume: VolumeRef, name: str, dest: Path) -> None:
        """``qemu-img convert -O qcow2`` of the LUN ``name`` (a LUN number: the volume's own,
        as iSCSI volumes have no snapshot files) into ``dest`` (see ``VolumeBackend.export``),
        within ``copy_timeout``. No lock stops a LUN a running VM writes (see the module
        docstring)."""
        ref = volume.model_copy(update={"name": name})
        conn, lun = self._where(ref)  # InvalidInput before dest is touched

        async def convert(part: Path) -> None:
            await self._size(ref, conn, lun)
            await self._qemu(
                volume.pool,
                conn,
                [self.qemu_img, "convert", "-q"],
                ["--image-opts", self._image_opts(conn, lun), "-O", "qcow2", str(part)],
            )

        async with self._locks.hold(self._key(conn, lun)):
            try:
                await write_new(dest, convert)
            except Exception as exc:
                raise volume_error("export", volume, exc) from exc

    # --- snapshots: raw LUNs have none ------------------------------------------------------

    async def create_overlay(self, volume: VolumeRef, new_name: str, backing_name: str) -> None:
        raise _no_snapshots(volume)

    async def rebase(self, volume: VolumeRef, name: str, backing_name: str | None) -> None:
        raise _no_snapshots(volume)

    async def delete_file(self, volume: VolumeRef, name: str) -> None:
        raise _no_snapshots(volume)

    async def backing_of(self, volume: VolumeRef, name: str) -> str | None:
        raise _no_snapshots(volume)

    async def allocated(self, volume: VolumeRef, name: str) -> int | None:
        """None: a LUN is provisioned whole by the storage admin, the target says nothing of
        what is written on it."""
        return None

    # --- helpers ----------------------------------------------------------------------------

    def _conn(self, pool: PoolRef) -> _Conn:
        settings = pool_settings(pool, IscsiSettings)
        host, port = parse_portal(settings.portal)
        if pool.credentials is None:
            return _Conn(settings, host, port)
        user, sep, password = pool.credentials.rstrip("\r\n").partition(":")
        if not sep or not user or not password:
            raise InvalidInput(
                f"the credentials of iscsi pool {pool.id} are not CHAP user:secret",
                pool_id=pool.id,
            )
        return _Conn(settings, host, port, user, password)

    def _where(self, volume: VolumeRef) -> tuple[_Conn, int]:
        conn = self._conn(volume.pool)
        if not _LUN.match(volume.name) or int(volume.name) > libiscsi.MAX_LUN:
            raise InvalidInput(
                f"invalid LUN number {volume.name!r} (0-{libiscsi.MAX_LUN})",
                pool_id=volume.pool.id,
                volume_id=volume.volume_id,
                name=volume.name,
            )
        if volume.format != "raw":
            raise InvalidInput(
                f"iSCSI volumes are raw LUNs, not {volume.format}",
                pool_id=volume.pool.id,
                volume_id=volume.volume_id,
                format=volume.format,
            )
        return conn, int(volume.name)

    def _key(self, conn: _Conn, lun: int) -> str:
        return f"{conn.portal}/{conn.settings.iqn}/{lun}"

    async def _size(self, volume: VolumeRef, conn: _Conn, lun: int) -> int:
        """The LUN's size in bytes; ``StorageError`` (``reason="not_found"``) if the target
        has no such LUN."""
        size = (await self._inventory(volume.pool, conn, [lun])).get(lun)
        if size is None:
            raise StorageError(
                f"{conn.where()} has no LUN {lun}",
                reason="not_found",
                lun=lun,
                iqn=conn.settings.iqn,
            )
        return size

    async def _usable_size(self, volume: VolumeRef, conn: _Conn, lun: int) -> int:
        """``_size``, and ``StorageError`` (``reason="too_small"``) unless the LUN holds
        ``volume.size_gb``."""
        size = await self._size(volume, conn, lun)
        if size < volume.size_gb * GIB:
            raise StorageError(
                f"LUN {lun} of {conn.where()} holds {size / GIB:.2f} GiB, less than the"
                f" volume's {volume.size_gb} GiB",
                reason="too_small",
                lun=lun,
                lun_size_bytes=size,
                size_gb=volume.size_gb,
            )
        return size

    async def _inventory(
        self, pool: PoolRef, conn: _Conn, only: Sequence[int] | None = None
    ) -> dict[int, int]:
        """{LUN number: size in bytes} of the target's disks (only those of ``only`` when
        given), from the ``libiscsi`` helper in a child process."""
        request = {
            "portal": conn.portal,
            "iqn": conn.settings.iqn,
            "initiator": self.initiator,
            "user": conn.user,
            "password": conn.password,
            "timeout_s": max(1, int(self.timeout / 2)),
            "luns": None if only is None else list(only),
        }
        try:
            result = await run_tool(
                [self.python, "-I", str(Path(libiscsi.__file__))],
                stdin=json.dumps(request).encode(),
                timeout=self.timeout,
                check=False,
                secrets=conn.secrets,
            )
        except StorageError as exc:
            exc.context["pool_id"] = pool.id
            raise
        try:
            answer: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            answer = {}
        if result.returncode == 0 and "luns" in answer:
            try:
                return {int(entry["lun"]): int(entry["size"]) for entry in answer["luns"]}
            except (KeyError, TypeError, ValueError) as exc:
                raise StorageError(
                    "unexpected answer of the iSCSI inventory", pool_id=pool.id
                ) from exc
        error = answer.get("error") or {}
        message = error.get("message") or result.stderr or f"exit status {result.returncode}"
        reason = error.get("reason") or "failed"
        hint = {
            "auth": " (wrong CHAP user or secret, or the target wants CHAP and the pool has none)",
            "not_found": " (no such target at this portal)",
            "unreachable": " (the portal is unreachable or does not answer)",
        }.get(reason, "")
        raise StorageError(
            f"iSCSI {error.get('stage') or 'request'} failed for {conn.where()}: {message}{hint}",
            pool_id=pool.id,
            reason=reason,
            stage=error.get("stage"),
            returncode=result.returncode,
        )

    def _image_opts(self, conn: _Conn, lun: int) -> str:
        """QEMU's ``--image-opts`` of the LUN: raw over the iscsi driver; with CHAP the user
        and the secret object ``_SECRET_ID`` (the secret itself is never in the options)."""
        opts = [
            "driver=raw",
            "file.driver=iscsi",
            "file.transport=tcp",
            f"file.portal={_opt(conn.portal)}",
            f"file.target={_opt(conn.settings.iqn)}",
            f"file.lun={libiscsi.lun_address(lun)}",
            f"file.initiator-name={_opt(self.initiator)}",
        ]
        if conn.user is not None:
            opts += [f"file.user={_opt(conn.user)}", f"file.password-secret={_SECRET_ID}"]
        return ",".join(opts)

    async def _qemu(self, pool: PoolRef, conn: _Conn, head: list[str], tail: list[str]) -> None:
        """Run ``head + [--object secret…] + tail`` (qemu-img or qemu-io) within
        ``copy_timeout``; with CHAP the secret object reads a temporary 0600 file, deleted
        afterwards."""
        tmp = None
        try:
            argv = list(head)
            if conn.password is not None:
                tmp = await asyncio.to_thread(_secret_dir, conn.password, self.tmp_dir)
                argv += ["--object", f"secret,id={_SECRET_ID},file={_opt(str(tmp / 'secret'))}"]
            try:
                await run_tool(argv + tail, timeout=self.copy_timeout, secrets=conn.secrets)
            except StorageError as exc:
                exc.context["pool_id"] = pool.id
                raise
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)  # inline: survives cancellation


def parse_portal(portal: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (host without brackets, port);
    the port defaults to 3260."""
    if portal.startswith("["):
        host, _, rest = portal[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = portal.partition(":")
    return host, int(port) if port else ISCSI_PORT


def _opt(value: str) -> str:
    """``value`` as a QEMU option value (a comma doubled)."""
    return value.replace(",", ",,")


def _no_snapshots(volume: VolumeRef) -> InvalidInput:
    return InvalidInput(
        _NO_SNAPSHOTS, pool_id=volume.pool.id, volume_id=volume.volume_id, type="iscsi"
    )


def _virtual_size(out: str) -> int:
    try:
        return int(json.loads(out)["virtual-size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError("unexpected output of qemu-img info", output=out[:2000]) from exc


def _secret_dir(secret: str, parent: Path | None) -> Path:
    """A new 0700 directory with the file ``secret`` (0600) holding ``secret`` as is."""
    path = Path(tempfile.mkdtemp(prefix="corral-iscsi-", dir=parent))
    try:
        fd = os.open(path / "secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path
