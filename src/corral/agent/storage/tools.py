"""Running the storage command-line tools (``rbd``, ``ceph``, ``qemu-img``, the libnfs helper).

One pattern for every tool: a timeout, the process killed (and reaped) on timeout or when the
caller is cancelled, and failures as ``StorageError``. Secrets handed in ``secrets`` are cut out
of every message and context (a tool may echo its input); they must never be on the command line
in the first place (pass them in a 0600 file or on stdin).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass

from corral.api.errors import StorageError

DEFAULT_TIMEOUT = 120.0
_STDERR_KEEP = 4000


@dataclass(frozen=True)
class ToolResult:
    """A finished process: exit status and decoded (secret-free) output."""

    returncode: int
    stdout: str
    stderr: str


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def run_tool(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    stdin: bytes | None = None,
    check: bool = True,
    secrets: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> ToolResult:
    """Run ``argv`` (no shell), feed it ``stdin``, and return its result.

    Raises ``StorageError`` (context ``cmd``; ``reason="timeout"`` after ``timeout`` seconds,
    ``returncode``/``stderr`` when ``check`` and it exits non-zero) and when it cannot be started.
    With ``check=False`` a non-zero exit is returned for the caller to interpret. The process
    is killed when the timeout expires or the caller is cancelled.
    """
    cmd = [redact(a, secrets) for a in argv]
    name = os.path.basename(argv[0])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise StorageError(f"cannot run {name}: {exc.strerror}", cmd=cmd) from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await _kill(proc)
        raise StorageError(
            f"{name} did not finish within {timeout:g} s", cmd=cmd, reason="timeout"
        ) from None
    except BaseException:
        await _kill(proc)
        raise
    result = ToolResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=redact(out.decode(errors="replace"), secrets),
        stderr=redact(err.decode(errors="replace"), secrets).strip()[-_STDERR_KEEP:],
    )
    if check and result.returncode != 0:
        raise StorageError(
            f"{name} failed: {result.stderr or 'no error output'}",
            cmd=cmd,
            returncode=result.returncode,
            stderr=result.stderr,
        )
    return result


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
