"""SimulatedBackend and the backend factories: in-memory volumes, faults, usage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from corral.agent.faults import FaultPlan
from corral.agent.storage.backend import DiskSource, PoolUsage, VolumeBackend
from corral.agent.storage.iscsi import IscsiBackend
from corral.agent.storage.local import LocalBackend
from corral.agent.storage.nfs import NfsBackend
from corral.agent.storage.rbd import RbdBackend
from corral.agent.storage.simulated_volumes import SimulatedBackend, sim_own_bytes
from corral.agent.storage.volumes import Backends, real_backends, simulated_backends
from corral.api.agent import PoolRef, VolumeRef
from corral.api.errors import InjectedFault, InvalidInput, StorageError

POOL = PoolRef(id="pool-1", type="rbd", settings={"monitors": ["m1"], "pool": "vms"})


def vref(volume_id: str = "vol-1", size_gb: int = 10, pool: PoolRef = POOL) -> VolumeRef:
    return VolumeRef(
        volume_id=volume_id, pool=pool, name=f"vol-{volume_id}", size_gb=size_gb, format="raw"
    )


@pytest.fixture
def backend() -> SimulatedBackend:
    return SimulatedBackend(host_name="sim-3", capacity_gb=100)


async def test_volumes_live_in_memory_per_pool(backend: SimulatedBackend) -> None:
    checked: VolumeBackend = backend
    await checked.create(vref("a", 10))
    await checked.create(vref("a", 50))  # exists: kept as it is
    await checked.create(vref("b", 20))
    other = PoolRef(id="pool-2", type="local", settings={"path": "/x"})
    await checked.create(vref("c", 5, pool=other))
    assert dict(backend.volumes("pool-1")) == {"a": 10, "b": 20}
    assert dict(backend.volumes("pool-2")) == {"c": 5}
    assert await checked.usage(POOL) == PoolUsage(total_gb=100, free_gb=70)
    await checked.resize(vref("a"), 30)
    await checked.resize(vref("a"), 15)  # smaller: nothing
    assert backend.volumes("pool-1")["a"] == 30
    await checked.delete(vref("b"))
    await checked.delete(vref("b"))  # absent: success
    assert dict(backend.volumes("pool-1")) == {"a": 30}
    assert checked.source(vref("a")) == DiskSource(
        kind="file", path="sim://sim-3/volumes/vol-a", format="raw"
    )


async def test_usage_is_thin_and_never_negative(backend: SimulatedBackend) -> None:
    for i in range(3):
        await backend.create(vref(str(i), 60))
    assert await backend.usage(POOL) == PoolUsage(total_gb=100, free_gb=0)


@pytest.mark.parametrize("op", ["volume.create", "volume.delete", "volume.resize", "volume.usage"])
async def test_planned_faults_fail_the_next_call_only(op: str) -> None:
    faults = FaultPlan()
    backend = SimulatedBackend(host_name="sim-0", faults=faults, capacity_gb=10)
    await backend.create(vref())
    backend.calls.clear()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "volume.create": lambda: backend.create(vref("new")),
        "volume.delete": lambda: backend.delete(vref()),
        "volume.resize": lambda: backend.resize(vref(), 20),
        "volume.usage": lambda: backend.usage(POOL),
    }
    faults.fail_next(op, StorageError("disk on fire"))
    with pytest.raises(StorageError, match="disk on fire"):
        await calls[op]()
    faults.fail_next(op)
    with pytest.raises(InjectedFault):
        await calls[op]()
    await calls[op]()
    assert faults.pending() == {}
    assert backend.calls[op] == 3


def test_simulated_backends_serve_every_pool_type_with_one_backend() -> None:
    faults = FaultPlan()
    backends = simulated_backends(host_name="sim-7", faults=faults, capacity_gb=42)
    assert backends.types == ["iscsi", "local", "nfs", "rbd"]
    chosen = {id(backends.for_pool(POOL.model_copy(update={"type": t}))) for t in backends.types}
    assert len(chosen) == 1
    only = backends.for_pool(POOL)
    assert isinstance(only, SimulatedBackend)
    assert (only.host_name, only.faults, only.capacity_gb) == ("sim-7", faults, 42)


def test_real_backends_are_local_nfs_rbd_and_iscsi() -> None:
    backends = real_backends()
    assert backends.types == ["iscsi", "local", "nfs", "rbd"]
    by_type = {
        t: type(backends.for_pool(POOL.model_copy(update={"type": t}))) for t in backends.types
    }
    assert by_type == {
        "iscsi": IscsiBackend,
        "local": LocalBackend,
        "nfs": NfsBackend,
        "rbd": RbdBackend,
    }
    with pytest.raises(InvalidInput) as err:
        Backends({"local": LocalBackend()}).for_pool(POOL.model_copy(update={"type": "nfs"}))
    assert err.value.context["supported"] == ["local"]


# --- Ceph snapshots (RbdSnapshots) -----------------------------------------------------------


async def test_ceph_snapshots_are_names_per_volume(backend: SimulatedBackend) -> None:
    from corral.agent.storage.backend import RbdSnapshots

    assert isinstance(backend, RbdSnapshots)
    await backend.create(vref("a"))
    await backend.snap_create(vref("a"), "s1")
    await backend.snap_create(vref("a"), "s1")  # existing: kept
    await backend.snap_create(vref("a"), "s2")
    await backend.snap_create(vref("b"), "s1")  # unknown volume: recorded (lenient)
    assert backend.snapshots("pool-1", "a") == {"s1", "s2"}
    assert backend.snapshots("pool-1", "b") == {"s1"}
    assert backend.snapshots("pool-2", "a") == frozenset()
    await backend.snap_rollback(vref("a"), "s2")
    assert backend.volumes("pool-1")["a"] == 10  # sizes untouched
    await backend.snap_remove(vref("a"), "s2")
    await backend.snap_remove(vref("a"), "s2")  # absent: success
    await backend.snap_remove(vref("zz"), "s1")  # absent volume: success
    assert backend.snapshots("pool-1", "a") == {"s1"}
    await backend.delete(vref("a"))  # the snapshots go with the volume
    assert backend.snapshots("pool-1", "a") == frozenset()
    assert backend.snapshots("pool-1", "b") == {"s1"}


async def test_rollback_to_an_unknown_snapshot_is_not_found(backend: SimulatedBackend) -> None:
    await backend.create(vref("a"))
    await backend.snap_create(vref("a"), "s1")
    for volume, snap in ((vref("a"), "s2"), (vref("b"), "s1")):
        with pytest.raises(StorageError) as err:
            await backend.snap_rollback(volume, snap)
        assert err.value.context["reason"] == "not_found"
        assert err.value.context["pool_id"] == "pool-1"
        assert err.value.context["volume_id"] == volume.volume_id
        assert err.value.context["snap"] == snap
    await backend.snap_remove(vref("a"), "s1")
    with pytest.raises(StorageError):
        await backend.snap_rollback(vref("a"), "s1")


@pytest.mark.parametrize("op", ["volume.snap_create", "volume.snap_rollback", "volume.snap_remove"])
async def test_planned_faults_fail_ceph_snapshot_calls(op: str) -> None:
    faults = FaultPlan()
    backend = SimulatedBackend(host_name="sim-0", faults=faults)
    await backend.create(vref())
    await backend.snap_create(vref(), "s1")
    backend.calls.clear()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "volume.snap_create": lambda: backend.snap_create(vref(), "s2"),
        "volume.snap_rollback": lambda: backend.snap_rollback(vref(), "s1"),
        "volume.snap_remove": lambda: backend.snap_remove(vref(), "s1"),
    }
    faults.fail_next(op, StorageError("ceph on fire"))
    with pytest.raises(StorageError, match="ceph on fire"):
        await calls[op]()
    assert backend.snapshots("pool-1", "vol-1") == {"s1"}  # nothing done
    faults.fail_next(op)
    with pytest.raises(InjectedFault):
        await calls[op]()
    await calls[op]()
    assert faults.pending() == {}
    assert backend.calls[op] == 3


async def test_rbd_snapshot_tasks_run_on_the_simulated_backend(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from corral.agent.executor import TaskExecutor, payload_key, payload_vm_id
    from corral.agent.specs import SpecStore
    from corral.api.agent import RbdSnapshotTask
    from tests.unit.agent.fakes import FakeCompute, FakeVolumes
    from tests.unit.storage.fakes import MemoryFetcher

    faults = FaultPlan()
    backends = simulated_backends(host_name="sim-1", faults=faults)
    ex = TaskExecutor(
        compute=FakeCompute(),  # type: ignore[arg-type]
        volumes=FakeVolumes(tmp_path_factory.mktemp("disks")),  # type: ignore[arg-type]
        specs=SpecStore(tmp_path_factory.mktemp("specs")),
        faults=faults,
        fetch=MemoryFetcher(),
        drift={},
        backends=backends,
    )
    sim = backends.for_pool(POOL)
    assert isinstance(sim, SimulatedBackend)
    task = RbdSnapshotTask(op="create", volume=vref("vol-7"), snap="s1")
    assert (payload_vm_id(task), payload_key(task)) == (None, "volume:vol-7")
    assert await ex.run(task) == {"bytes": sim_own_bytes("pool-1", "vol-7@s1")}
    assert sim.snapshots("pool-1", "vol-7") == {"s1"}
    rollback = RbdSnapshotTask(op="rollback", volume=vref("vol-7"), snap="s1")
    assert await ex.run(rollback) == {}
    faults.fail_next("agent.rbd.snapshot")
    with pytest.raises(InjectedFault):
        await ex.run(rollback)
    assert sim.calls["volume.snap_rollback"] == 1  # the agent's fault came first
    assert await ex.run(RbdSnapshotTask(op="remove", volume=vref("vol-7"), snap="s1")) == {
        "sizes": {}
    }
    assert sim.snapshots("pool-1", "vol-7") == frozenset()
    with pytest.raises(StorageError) as err:
        await ex.run(rollback)
    assert err.value.context["reason"] == "not_found"
    bad = vref("bad id")
    with pytest.raises(InvalidInput):  # the agent's own volume id check
        await ex.run(RbdSnapshotTask(op="create", volume=bad, snap="s1"))
