"""Fixtures of the end-to-end tests: scratch directories QEMU can read, libvirt, the test image.

A test's ``corral up`` keeps its state in ``e2e_dir`` (under /var/tmp, mode 0755: QEMU runs as
libvirt-qemu and must reach the disks and serial logs there). At teardown every libvirt domain whose
definition mentions that directory is destroyed and undefined, whatever happened in the test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import guest
from tests.e2e.inprocess import threaded_stack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def libvirt_conn() -> Iterator[Any]:
    """A connection to qemu:///system (skips, which ``make test`` turns into a failure, if none)."""
    import libvirt

    try:
        conn = guest.open_conn()
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {guest.URI}: {exc}")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def test_image() -> Path:
    """The tiny bootable guest, as ``scripts/build-test-image`` prints it (built on first use)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "build-test-image")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


def scratch_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def e2e_dir(libvirt_conn: Any) -> Iterator[Path]:
    """A scratch directory for one module's ``corral up`` (data dir, CLI config, logs)."""
    path = scratch_dir("corral-e2e-")
    try:
        yield path
    finally:
        guest.remove_domains_under(libvirt_conn, path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a whole in-process Corral with ``inprocess.SIM_HOSTS`` simulated hosts."""
    with threaded_stack(tmp_path_factory.mktemp("stack")) as base_url:
        yield base_url
