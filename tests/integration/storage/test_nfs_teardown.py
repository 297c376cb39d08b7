"""The NFS test server leaves nothing behind when the code using it fails: its own module, as
no other NFS server may run meanwhile (one per machine; ``nfs_export`` is module-scoped)."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.storage.test_storage_servers import gone
from tests.support.storage import nfs

pytestmark = pytest.mark.storage_servers


def test_nfs_server_is_gone_after_a_failure() -> None:
    with pytest.raises(RuntimeError), nfs.nfs_server() as export:
        pid = export.pid
        assert not gone(pid)
        raise RuntimeError("test failed")
    assert gone(pid)
    assert not export.directory.parent.exists()
    rpcinfo = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], capture_output=True, text=True)
    assert str(export.nfs_port) not in rpcinfo.stdout  # unregistered (or rpcbind stopped too)
