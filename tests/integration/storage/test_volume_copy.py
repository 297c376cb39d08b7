"""``volume.copy`` (a volume moved between pools) through the agent's executor with the real
backends: a local volume's snapshot chain flattened into a new volume on an NFS pool (ganesha),
the data the guest would see the same, no staging file left; a failed copy leaves no target."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.specs import SpecStore
from corral.agent.storage.dirpool import DirPool
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.volumes import Backends
from corral.api.agent import PoolRef, VolumeCopyTask, VolumeRef
from corral.api.errors import StorageError
from tests.integration.storage.test_volume_export import LAYERS, compare, listing, make_chain
from tests.support.storage.nfs import NfsExport
from tests.unit.agent.fakes import FakeCompute
from tests.unit.storage.fakes import MemoryFetcher

pytestmark = pytest.mark.storage_servers


def executor(tmp_path: Path) -> TaskExecutor:
    return TaskExecutor(
        compute=FakeCompute(),  # type: ignore[arg-type]
        volumes=DirPool(tmp_path / "agent-pool"),
        specs=SpecStore(tmp_path / "specs"),
        faults=FaultPlan(),
        fetch=MemoryFetcher(),
        drift={},
        backends=Backends({"local": LocalBackend(), "nfs": NfsBackend()}),
    )


async def test_a_local_chain_is_copied_flat_to_an_nfs_pool(
    tmp_path: Path, nfs_dir: NfsExport
) -> None:
    ex = executor(tmp_path)
    await ex.volumes.prepare()  # type: ignore[attr-defined]
    local = PoolRef(id="pool-local", type="local", settings={"path": str(tmp_path / "loc")})
    nfs = PoolRef(
        id="pool-nfs", type="nfs", settings={"server": nfs_dir.host, "export": nfs_dir.path}
    )
    source = VolumeRef(volume_id="vol-1", pool=local, name="v2", size_gb=1)
    files = tmp_path / "loc" / "volumes"
    await make_chain(LocalBackend(), source, {n: str(files / n) for n in LAYERS})
    target = VolumeRef(volume_id="vol-1", pool=nfs, name="vol-1.qcow2", size_gb=1)

    await ex.run(VolumeCopyTask(source=source, target=target))
    url = NfsBackend().url(target)
    assert compare(files / "v2", "qcow2", url) == 0  # what a guest reads
    assert listing(nfs_dir.local("corral-volumes")) == ["vol-1.qcow2"]
    assert [p.name for p in (tmp_path / "agent-pool" / "images").iterdir()] == []  # no staging
    await ex.run(VolumeCopyTask(source=source, target=target))  # existing target: kept

    missing = source.model_copy(update={"name": "v9"})
    other = target.model_copy(update={"name": "vol-2.qcow2"})
    with pytest.raises(StorageError):
        await ex.run(VolumeCopyTask(source=missing, target=other))
    assert listing(nfs_dir.local("corral-volumes")) == ["vol-1.qcow2"]  # no half target
    assert [p.name for p in (tmp_path / "agent-pool" / "images").iterdir()] == []
