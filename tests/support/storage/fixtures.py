"""pytest fixtures over the storage servers; import them into a conftest.py:

    from tests.support.storage.fixtures import ceph_cluster as ceph_cluster  # (and the others)

``ceph_cluster`` (~5 s to start) is session-scoped, ``nfs_export`` module-scoped (one ganesha
per machine at a time; 0.1 s to start). ``nfs_dir`` is a fresh sub-directory of the export for
one test; ``iscsi_target`` is a new tgtd target per test (it starts in milliseconds). A machine
that cannot run a server skips the tests that need it, with the reason (a failure under
``CORRAL_NO_SKIP=1``).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.storage import ceph, iscsi, nfs
from tests.support.storage.daemons import Unavailable


def _available_or_skip(check: Callable[[], None]) -> None:
    try:
        check()
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def nfs_export() -> Iterator[nfs.NfsExport]:
    """The module's NFS export (ganesha on 127.0.0.1, ~0.1 s to start); prefer ``nfs_dir`` in
    tests. Module-scoped: only one NFS server may run per machine, and a test of the server's
    own tear-down needs none running."""
    _available_or_skip(nfs.check_available)
    with nfs.nfs_server() as export:
        yield export


@pytest.fixture
def nfs_dir(nfs_export: nfs.NfsExport) -> Iterator[nfs.NfsExport]:
    """An empty sub-directory of the session's export, for this test only (deleted after)."""
    sub = nfs_export.subdir(f"t-{uuid.uuid4().hex[:10]}")
    yield sub
    shutil.rmtree(sub.directory, ignore_errors=True)


@pytest.fixture
def iscsi_target() -> Iterator[iscsi.IscsiTarget]:
    """A target of its own for this test, with one 64 MiB LUN (number 1); ``add_lun`` adds more."""
    _available_or_skip(iscsi.check_available)
    with iscsi.iscsi_target() as target:
        yield target


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[ceph.CephCluster]:
    """The session's Ceph cluster: pool ``rbd``, cephx client ``client.libvirt``."""
    _available_or_skip(ceph.check_available)
    with ceph.ceph_cluster() as cluster:
        yield cluster
