"""Generate the sync client (``corral/sdk/_sync``) from the async one (``corral/sdk/_async``).

The async sources are the only ones written by hand. Each is rewritten token by token (``async def``
→ ``def``, ``await x`` → ``x``, ``AsyncClient`` → ``Client``, ``async_sleep`` → ``sync_sleep``...),
then import-sorted and formatted with ruff, so the generated files pass the same checks. A unit test
fails when a generated file is stale. Run ``python src/corral/sdk/_unasync.py [--check]`` (a path,
not ``-m``: importing ``corral.sdk`` needs the generated files).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent
SOURCE = PACKAGE / "_async"
TARGET = PACKAGE / "_sync"
MODULES = (
    "client.py",
    "operation.py",
    "resources.py",
    "workloads.py",
    "identity.py",
    "access.py",
    "audit.py",
    "storage.py",
    "volumes.py",
    "snapshots.py",
    "vm_snapshots.py",
    "vm_nics.py",
    "recycle.py",
    "networks.py",
    "security_groups.py",
)

RULES: tuple[tuple[str, str], ...] = (
    (r"\basync def\b", "def"),
    (r"\basync for\b", "for"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\baread\b", "read"),
    (r"\baiter_bytes\b", "iter_bytes"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\basync_(\w+)", r"sync_\1"),
    (r"\bcorral\.sdk\._async\b", "corral.sdk._sync"),
)


def unasync(source: str, *, origin: str) -> str:
    """The sync twin of one async module (not yet formatted)."""
    for pattern, replacement in RULES:
        source = re.sub(pattern, replacement, source)
    docstring_end = source.index('"""', 3) + 3
    banner = f"\n\n# Generated from {origin} by corral.sdk._unasync: do not edit."
    return source[:docstring_end] + banner + source[docstring_end:]


def _ruff(args: list[str], source: str, filename: Path) -> str:
    cmd = [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(filename), "-"]
    done = subprocess.run(cmd, input=source, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ruff {args[0]} failed on {filename}: {done.stderr}")
    return done.stdout


def generate(name: str) -> str:
    """The generated, formatted content of ``_sync/<name>``."""
    target = TARGET / name
    code = unasync((SOURCE / name).read_text(), origin=f"corral/sdk/_async/{name}")
    code = _ruff(
        ["check", "--fix", "--exit-zero", "--quiet", "--select", "I,F401,UP028", "--unsafe-fixes"],
        code,
        target,
    )
    return _ruff(["format", "--quiet"], code, target)


def main(argv: list[str]) -> int:
    """Write the generated files (``--check``: only report stale ones, exit 1 if any)."""
    check = "--check" in argv
    stale = []
    for name in MODULES:
        code = generate(name)
        target = TARGET / name
        if not target.exists() or target.read_text() != code:
            stale.append(name)
            if not check:
                target.write_text(code)
    for name in stale:
        print(f"{'stale' if check else 'regenerated'}: corral/sdk/_sync/{name}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
