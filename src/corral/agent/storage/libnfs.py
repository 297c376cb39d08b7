"""A tiny NFSv3 client for what ``qemu-img`` cannot do over ``nfs://``: mkdir, stat, rename,
unlink and statvfs, through libnfs (``libnfs.so.13``, the library QEMU's own NFS driver uses:
package libnfs13, a dependency of qemu-block-extra) with ctypes. Nothing is mounted in the kernel.

Debian 12's libnfs-utils has only nfs-cat, nfs-cp and nfs-ls (no nfs-rm, nfs-mkdir or
nfs-stat), hence this module. It imports only the standard library and runs as a child process
(``python -I libnfs.py``, see ``run_ops``): the agent can time it out and kill it, and a crash
in C code cannot take the agent down.

Protocol: a JSON request on stdin::

    {"server": "nfs1", "export": "/srv/vms", "uid": 0, "gid": 0, "timeout_s": 30,
     "ops": [["mkdir", "/dir"], ["exists", "/dir/f"], ["rename", "/dir/a", "/dir/b"],
             ["unlink", "/dir/f"], ["statvfs", "/"]]}

Paths are relative to the export (leading ``/``). The answer on stdout is
``{"results": [...]}`` (one per op, in order: mkdir → created?, exists → bool, rename → null,
unlink → removed?, statvfs → {"total": bytes, "free": bytes}) with exit status 0, or
``{"error": {"op", "path", "errno", "message"}}`` with exit status 1 at the first failing op
(ENOENT is not a failure for exists/unlink, nor EEXIST for mkdir).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys
from typing import Any

LIBRARY = "libnfs.so.13"


class _Stat64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            *("dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks"),
            *("atime", "mtime", "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used"),
        )
    ]


class _Statvfs64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            *("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree"),
            *("f_favail", "f_fsid", "f_flag", "f_namemax"),
        )
    ]


class NfsFailure(Exception):
    """An NFS call failed: ``errno`` (positive) and libnfs's message."""

    def __init__(self, op: str, path: str, err: int, message: str) -> None:
        super().__init__(message)
        self.op, self.path, self.errno, self.message = op, path, err, message


def _load() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(LIBRARY)
    except OSError:
        found = ctypes.util.find_library("nfs")
        if found is None:
            raise
        lib = ctypes.CDLL(found)
    ctx, s = ctypes.c_void_p, ctypes.c_char_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "nfs_init_context": (ctx, []),
        "nfs_destroy_context": (None, [ctx]),
        "nfs_get_error": (s, [ctx]),
        "nfs_set_uid": (None, [ctx, ctypes.c_int]),
        "nfs_set_gid": (None, [ctx, ctypes.c_int]),
        "nfs_set_timeout": (None, [ctx, ctypes.c_int]),
        "nfs_mount": (ctypes.c_int, [ctx, s, s]),
        "nfs_umount": (ctypes.c_int, [ctx]),
        "nfs_mkdir2": (ctypes.c_int, [ctx, s, ctypes.c_int]),
        "nfs_stat64": (ctypes.c_int, [ctx, s, ctypes.POINTER(_Stat64)]),
        "nfs_rename": (ctypes.c_int, [ctx, s, s]),
        "nfs_unlink": (ctypes.c_int, [ctx, s]),
        "nfs_statvfs64": (ctypes.c_int, [ctx, s, ctypes.POINTER(_Statvfs64)]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class Client:
    """One mounted export (MOUNT protocol only: nothing in the kernel)."""

    def __init__(self, server: str, export: str, *, uid: int, gid: int, timeout_s: int) -> None:
        self._lib = _load()
        self._ctx = self._lib.nfs_init_context()
        if not self._ctx:
            raise NfsFailure("mount", export, errno.ENOMEM, "cannot create an NFS context")
        self._lib.nfs_set_uid(self._ctx, uid)
        self._lib.nfs_set_gid(self._ctx, gid)
        self._lib.nfs_set_timeout(self._ctx, max(1, timeout_s) * 1000)  # whole seconds
        self._mounted = False
        self._check("mount", export, self._lib.nfs_mount(self._ctx, server.encode(), _b(export)))
        self._mounted = True

    def close(self) -> None:
        if self._mounted:
            self._lib.nfs_umount(self._ctx)  # unregisters from mountd; failure is harmless
            self._mounted = False
        if self._ctx:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None

    def mkdir(self, path: str, mode: int = 0o755) -> bool:
        rc = self._lib.nfs_mkdir2(self._ctx, _b(path), mode)
        if rc == -errno.EEXIST:
            return False
        self._check("mkdir", path, rc)
        return True

    def exists(self, path: str) -> bool:
        st = _Stat64()
        rc = self._lib.nfs_stat64(self._ctx, _b(path), ctypes.byref(st))
        if rc == -errno.ENOENT:
            return False
        self._check("exists", path, rc)
        return True

    def rename(self, old: str, new: str) -> None:
        self._check("rename", old, self._lib.nfs_rename(self._ctx, _b(old), _b(new)))

    def unlink(self, path: str) -> bool:
        rc = self._lib.nfs_unlink(self._ctx, _b(path))
        if rc == -errno.ENOENT:
            return False
        self._check("unlink", path, rc)
        return True

    def statvfs(self, path: str) -> dict[str, int]:
        sv = _Statvfs64()
        self._check("statvfs", path, self._lib.nfs_statvfs64(self._ctx, _b(path), ctypes.byref(sv)))
        unit = sv.f_frsize or sv.f_bsize
        return {"total": sv.f_blocks * unit, "free": sv.f_bavail * unit}

    def _check(self, op: str, path: str, rc: int) -> None:
        if rc < 0:
            raw = self._lib.nfs_get_error(self._ctx)
            message = raw.decode(errors="replace") if raw else os.strerror(-rc)
            raise NfsFailure(op, path, -rc, message)


def _b(path: str) -> bytes:
    return path.encode()


def run_ops(request: dict[str, Any]) -> list[Any]:
    """Mount ``request``'s export, run its ops in order and return their results; raises
    ``NfsFailure`` at the first failure."""
    client = Client(
        str(request["server"]),
        str(request["export"]),
        uid=int(request.get("uid", 0)),
        gid=int(request.get("gid", 0)),
        timeout_s=int(request.get("timeout_s", 30)),
    )
    try:
        results: list[Any] = []
        for op, *args in request["ops"]:
            if op == "mkdir":
                results.append(client.mkdir(args[0]))
            elif op == "exists":
                results.append(client.exists(args[0]))
            elif op == "rename":
                client.rename(args[0], args[1])
                results.append(None)
            elif op == "unlink":
                results.append(client.unlink(args[0]))
            elif op == "statvfs":
                results.append(client.statvfs(args[0]))
            else:
                raise NfsFailure(str(op), "", errno.EINVAL, f"unknown operation {op!r}")
        return results
    finally:
        client.close()


def main() -> int:
    try:
        answer: dict[str, Any] = {"results": run_ops(json.load(sys.stdin))}
        status = 0
    except NfsFailure as exc:
        error = {"op": exc.op, "path": exc.path, "errno": exc.errno, "message": exc.message}
        answer, status = {"error": error}, 1
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        answer = {"error": {"op": "", "path": "", "errno": 0, "message": repr(exc)}}
        status = 1
    json.dump(answer, sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
