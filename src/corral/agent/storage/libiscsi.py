"""The LUN inventory of an iSCSI target (REPORT LUNS, INQUIRY, READ CAPACITY) through libiscsi
(``libiscsi.so.7``, the library QEMU's own iSCSI driver uses: package libiscsi7, a dependency
of qemu-block-extra) with ctypes. Nothing is logged in through the kernel: these hosts have no
open-iscsi initiator, and Debian's libiscsi-bin (``iscsi-ls``) is not installed.

It imports only the standard library and runs as a child process (``python -I libiscsi.py``,
see ``inventory``): libiscsi's synchronous calls block, so the agent runs them where it can time
them out and kill them, and a crash in C code cannot take the agent down. The CHAP secret comes
on stdin, never on a command line.

Protocol: a JSON request on stdin::

    {"portal": "host:3260", "iqn": "iqn.2026-01.org.example:t1",
     "initiator": "iqn.2008-11.org.linux-kvm:corral-agent",
     "user": "alice" or null, "password": "…" or null, "timeout_s": 30, "luns": null or [1, 5]}

The answer on stdout is ``{"luns": [{"lun": 1, "address": 1, "size": bytes,
"block_size": 512}, …]}`` with exit status 0: the target's direct-access LUNs (disks) in the
order REPORT LUNS gives them, or only those of ``luns`` that it reports (an absent one is left
out). On failure: ``{"error": {"stage", "reason", "message"}}`` with exit status 1; ``stage``
is ``connect``, ``login``, ``report_luns``, ``inquiry`` or ``read_capacity``, ``reason`` is
``unreachable`` (no connection, or it broke before the target answered the login), ``auth``
(CHAP refused, or not authorized), ``not_found`` (no such target) or ``failed``.

LUN numbers: ``lun`` is the number an admin gives the LUN on the target (``tgtadm --lun 300``),
``address`` the 16-bit first level of its SAM LUN as REPORT LUNS returns it and as libiscsi (and
so QEMU's ``lun`` option and libvirt's ``<source name='<iqn>/<lun>'>``) addresses it: the same
number below 256 (peripheral addressing), ``0x4000 | lun`` above (flat addressing: LUN 300 is
16684, as Linux numbers it too). A LUN the target reports in any other form (a bus other than 0,
flat addressing below 256, hierarchical LUNs) is left out: ``lun_address`` could not reach it.

Other LUNs are left out too: those whose INQUIRY peripheral qualifier is not 0 (not connected)
or whose device type is not a direct-access block device (tgtd's LUN 0 is its controller, type
0x0c). The first command to each LUN after login answers UNIT ATTENTION (power on, reset): every
command is retried a few times while it ends in CHECK CONDITION.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import re
import sys
from typing import Any

LIBRARY = "libiscsi.so.7"
SESSION_NORMAL = 2
HEADER_DIGEST_NONE_CRC32C = 1  # offer none, accept CRC32C (QEMU's default)
STATUS_GOOD = 0
STATUS_CHECK_CONDITION = 2
DIRECT_ACCESS = 0x00
RETRIES = 5
REPORT_LUNS_HEADER = 16  # 8 bytes of header plus one 8-byte entry: enough to learn the full size
MAX_LUN = 0x3FFF
_LOGIN_STATUS = re.compile(r"\((\d+)\)\s*$")
# iSCSI login status classes/details (RFC 7143 11.13.5): 0x0201 authentication failure,
# 0x0202 authorization failure, 0x0203 target not found, 0x0204 target removed.
_LOGIN_REASONS = {0x0201: "auth", 0x0202: "auth", 0x0203: "not_found", 0x0204: "not_found"}


class _ReportLuns(ctypes.Structure):
    _fields_ = [("num", ctypes.c_uint32)]  # followed by ``num`` uint16 addresses


class _InquiryStandard(ctypes.Structure):
    # the first two fields of ``struct scsi_inquiry_standard`` (enums: C ints)
    _fields_ = [("qualifier", ctypes.c_int), ("device_type", ctypes.c_int)]


class _ReadCapacity16(ctypes.Structure):
    _fields_ = [
        ("returned_lba", ctypes.c_uint64),
        ("block_length", ctypes.c_uint32),
        *((name, ctypes.c_uint8) for name in ("p_type", "prot_en", "p_i_exp", "lbppbe")),
        *((name, ctypes.c_uint8) for name in ("lbpme", "lbprz")),
        ("lalba", ctypes.c_uint16),
    ]


class _ReadCapacity10(ctypes.Structure):
    _fields_ = [("lba", ctypes.c_uint32), ("block_size", ctypes.c_uint32)]


class IscsiFailure(Exception):
    """An iSCSI step failed: ``stage``, ``reason`` (see the module docstring) and libiscsi's
    message."""

    def __init__(self, stage: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.reason, self.message = stage, reason, message


def lun_address(lun: int) -> int:
    """The 16-bit LUN address libiscsi (and QEMU) use for the admin's LUN number ``lun``."""
    if not 0 <= lun <= MAX_LUN:
        raise ValueError(f"LUN {lun} is out of range (0-{MAX_LUN})")
    return lun if lun < 256 else 0x4000 | lun


def lun_number(address: int) -> int | None:
    """The admin's LUN number of a 16-bit LUN ``address``; None if ``lun_address`` would not
    give that address back (another addressing method or a bus other than 0)."""
    method = address >> 14
    number = address & MAX_LUN if method == 1 else address if method == 0 else -1
    if number < 0 or lun_address(number) != address:
        return None
    return number


def _load() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY)
    except OSError:
        found = ctypes.util.find_library("iscsi")
        if found is None:
            raise
        lib = ctypes.CDLL(found)
    ctx, task, s, i = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "iscsi_create_context": (ctx, [s]),
        "iscsi_destroy_context": (i, [ctx]),
        "iscsi_get_error": (s, [ctx]),
        "iscsi_set_targetname": (i, [ctx, s]),
        "iscsi_set_session_type": (i, [ctx, i]),
        "iscsi_set_header_digest": (i, [ctx, i]),
        "iscsi_set_initiator_username_pwd": (i, [ctx, s, s]),
        "iscsi_set_timeout": (i, [ctx, i]),
        "iscsi_connect_sync": (i, [ctx, s]),
        "iscsi_login_sync": (i, [ctx]),
        "iscsi_logout_sync": (i, [ctx]),
        "iscsi_reportluns_sync": (task, [ctx, i, i]),
        "iscsi_inquiry_sync": (task, [ctx, i, i, i, i]),
        "iscsi_readcapacity16_sync": (task, [ctx, i]),
        "iscsi_readcapacity10_sync": (task, [ctx, i, i, i]),
        "scsi_datain_getfullsize": (i, [task]),
        "scsi_datain_unmarshall": (ctypes.c_void_p, [task]),
        "scsi_free_scsi_task": (None, [task]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class Session:
    """One logged-in normal session with a target."""

    def __init__(
        self,
        portal: str,
        iqn: str,
        *,
        initiator: str,
        user: str | None,
        password: str | None,
        timeout_s: int,
    ) -> None:
        self._lib = _load()
        self._ctx = self._lib.iscsi_create_context(initiator.encode())
        if not self._ctx:
            raise IscsiFailure("connect", "failed", "cannot create an iSCSI context")
        self._logged_in = False
        lib, ctx = self._lib, self._ctx
        lib.iscsi_set_targetname(ctx, iqn.encode())
        lib.iscsi_set_session_type(ctx, SESSION_NORMAL)
        lib.iscsi_set_header_digest(ctx, HEADER_DIGEST_NONE_CRC32C)
        lib.iscsi_set_timeout(ctx, max(1, timeout_s))
        if user is not None:
            lib.iscsi_set_initiator_username_pwd(ctx, user.encode(), (password or "").encode())
        try:
            if lib.iscsi_connect_sync(ctx, portal.encode()) != 0:
                raise IscsiFailure("connect", "unreachable", self._error())
            if lib.iscsi_login_sync(ctx) != 0:
                message = self._error()
                status = _LOGIN_STATUS.search(message)
                # no login status: the connection broke before the target answered
                reason = (
                    _LOGIN_REASONS.get(int(status.group(1)), "failed") if status else "unreachable"
                )
                raise IscsiFailure("login", reason, message)
        except BaseException:
            self.close()
            raise
        self._logged_in = True

    def close(self) -> None:
        if self._logged_in:
            self._lib.iscsi_logout_sync(self._ctx)  # failure is harmless: the context goes
            self._logged_in = False
        if self._ctx:
            self._lib.iscsi_destroy_context(self._ctx)
            self._ctx = None

    def report_luns(self) -> list[int]:
        """The 16-bit addresses of every LUN the target reports (REPORT LUNS, all LUNs)."""
        alloc = REPORT_LUNS_HEADER
        for _ in range(RETRIES):
            task = self._command("report_luns", self._lib.iscsi_reportluns_sync, 0, alloc)
            try:
                full = int(self._lib.scsi_datain_getfullsize(task))
                if full > alloc:  # the list did not fit: ask again with room for all of it
                    alloc = full
                    continue
                raw = self._lib.scsi_datain_unmarshall(task)
                if not raw:
                    raise IscsiFailure("report_luns", "failed", "cannot parse REPORT LUNS data")
                count = ctypes.cast(raw, ctypes.POINTER(_ReportLuns)).contents.num
                entries = ctypes.cast(
                    raw + ctypes.sizeof(_ReportLuns), ctypes.POINTER(ctypes.c_uint16)
                )
                return [int(entries[n]) for n in range(count)]
            finally:
                self._lib.scsi_free_scsi_task(task)
        raise IscsiFailure("report_luns", "failed", "the LUN list kept growing")

    def is_disk(self, address: int) -> bool:
        """Whether the LUN is a connected direct-access block device (standard INQUIRY)."""
        task = self._command("inquiry", self._lib.iscsi_inquiry_sync, address, 0, 0, 64)
        try:
            raw = self._lib.scsi_datain_unmarshall(task)
            if not raw:
                raise IscsiFailure("inquiry", "failed", f"cannot parse INQUIRY data of {address}")
            data = ctypes.cast(raw, ctypes.POINTER(_InquiryStandard)).contents
            return bool(data.qualifier == 0 and data.device_type == DIRECT_ACCESS)
        finally:
            self._lib.scsi_free_scsi_task(task)

    def capacity(self, address: int) -> tuple[int, int]:
        """(size in bytes, logical block size) of the LUN: READ CAPACITY(16), or (10) for
        targets that do not know it."""
        try:
            task = self._command("read_capacity", self._lib.iscsi_readcapacity16_sync, address)
        except IscsiFailure:
            task = None
        if task is not None:
            try:
                raw = self._lib.scsi_datain_unmarshall(task)
                if raw:
                    rc16 = ctypes.cast(raw, ctypes.POINTER(_ReadCapacity16)).contents
                    block = int(rc16.block_length)
                    return (int(rc16.returned_lba) + 1) * block, block
            finally:
                self._lib.scsi_free_scsi_task(task)
        task = self._command("read_capacity", self._lib.iscsi_readcapacity10_sync, address, 0, 0)
        try:
            raw = self._lib.scsi_datain_unmarshall(task)
            if not raw:
                raise IscsiFailure("read_capacity", "failed", f"no capacity for LUN {address}")
            rc10 = ctypes.cast(raw, ctypes.POINTER(_ReadCapacity10)).contents
            return (int(rc10.lba) + 1) * int(rc10.block_size), int(rc10.block_size)
        finally:
            self._lib.scsi_free_scsi_task(task)

    def _command(self, stage: str, call: Any, *args: int) -> Any:
        """Run a synchronous SCSI command; its task (the caller frees it) once it ends GOOD,
        retried while it ends in CHECK CONDITION (UNIT ATTENTION after login)."""
        message = ""
        for _ in range(RETRIES):
            task = call(self._ctx, *args)
            if not task:
                raise IscsiFailure(stage, "failed", self._error())
            status = ctypes.cast(task, ctypes.POINTER(ctypes.c_int)).contents.value
            if status == STATUS_GOOD:
                return task
            message = self._error() or f"SCSI status {status:#x}"
            self._lib.scsi_free_scsi_task(task)
            if status != STATUS_CHECK_CONDITION:
                break
        raise IscsiFailure(stage, "failed", message)

    def _error(self) -> str:
        raw = self._lib.iscsi_get_error(self._ctx)
        return raw.decode(errors="replace").strip() if raw else "unknown error"


def inventory(request: dict[str, Any]) -> list[dict[str, int]]:
    """Log in as ``request`` says and list the target's disks (see the module docstring)."""
    wanted = request.get("luns")
    session = Session(
        str(request["portal"]),
        str(request["iqn"]),
        initiator=str(request["initiator"]),
        user=request.get("user"),
        password=request.get("password"),
        timeout_s=int(request.get("timeout_s", 30)),
    )
    try:
        found = []
        for address in session.report_luns():
            lun = lun_number(address)
            if lun is None or (wanted is not None and lun not in wanted):
                continue
            if not session.is_disk(address):
                continue
            size, block = session.capacity(address)
            found.append({"lun": lun, "address": address, "size": size, "block_size": block})
        return found
    finally:
        session.close()


def main() -> int:
    try:
        answer: dict[str, Any] = {"luns": inventory(json.load(sys.stdin))}
        status = 0
    except IscsiFailure as exc:
        answer = {"error": {"stage": exc.stage, "reason": exc.reason, "message": exc.message}}
        status = 1
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        answer = {"error": {"stage": "", "reason": "failed", "message": repr(exc)}}
        status = 1
    json.dump(answer, sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
