"""``pools.sync`` on a host with the real backends against real servers: an NFS pool gets its
``corral-volumes`` directory and reports the export's figures; pools that cannot be reached are
reported failed, an RBD pool's key never in the error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.agent.pools import HostPools, PoolStore
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import PoolRef
from tests.support.storage.ceph import CephCluster
from tests.support.storage.nfs import NfsExport

pytestmark = pytest.mark.storage_servers

GIB = 1 << 30


def host_pools(tmp_path: Path, keys: Path | None = None) -> HostPools:
    backends = Backends(
        {
            "nfs": NfsBackend(timeout=20),
            "rbd": RbdBackend(tmp_dir=keys, connect_timeout=3, timeout=30),
        }
    )
    return HostPools(name="t", store=PoolStore(tmp_path / "pools.json"), backends=backends)


async def test_nfs_pool_is_prepared_and_measured(nfs_dir: NfsExport, tmp_path: Path) -> None:
    good = PoolRef(
        id="p-nfs", type="nfs", settings={"server": nfs_dir.host, "export": nfs_dir.path}
    )
    gone = PoolRef(
        id="p-gone", type="nfs", settings={"server": nfs_dir.host, "export": "/no/such/export"}
    )
    assert not nfs_dir.local("corral-volumes").exists()
    reports = {r.pool_id: r for r in await host_pools(tmp_path).sync([good, gone])}
    assert nfs_dir.local("corral-volumes").is_dir()
    ok = reports["p-nfs"]
    fs = os.statvfs(nfs_dir.directory)
    assert ok.ok and ok.error is None
    assert ok.total_gb == pytest.approx(fs.f_blocks * fs.f_frsize / GIB, abs=0.01)
    assert ok.free_gb == pytest.approx(fs.f_bavail * fs.f_frsize / GIB, rel=0.01)
    bad = reports["p-gone"]
    assert not bad.ok and bad.error is not None and "/no/such/export" in bad.error


async def test_rbd_pool_with_a_wrong_key_is_failed_without_the_key(
    ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    wrong = "AQBwrongwrongwrongwrongwrongwrongwrong=="
    pool = PoolRef(
        id="p-ceph",
        type="rbd",
        settings={"monitors": [ceph_cluster.mon_host], "pool": ceph_cluster.pool,
                  "user": ceph_cluster.client},
        credentials=wrong,
    )  # fmt: skip
    pools = host_pools(tmp_path, keys)
    [report] = await pools.sync([pool])
    assert not report.ok and report.error and wrong not in report.error
    assert list(keys.iterdir()) == []  # the temporary keyfiles are gone
    assert wrong in (tmp_path / "pools.json").read_text()
