"""Spec store (atomic private files), reconcile at start-up, and define/undefine ordering."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.reconcile import MISSING, REDEFINED, UNKNOWN, reconcile, vm_reports
from corral.agent.specs import SpecStore, StoredSpec
from corral.api.agent import ImageRef, VmDefine, VmUndefine
from corral.api.errors import InjectedFault, InvalidInput, InvalidState, StorageError
from corral.api.vms import PowerState
from tests.unit.agent.fakes import FakeCompute, FakeVolumes, spec


def stored(vm_id: str = "vm-1", *, cpus: int = 1) -> StoredSpec:
    return StoredSpec(spec=spec(vm_id, cpus=cpus), disk_path=f"/pool/{vm_id}.qcow2")


def test_spec_files_are_private_atomic_and_reloaded(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "vms")
    store.open()
    store.put(stored("vm-1"))
    store.put(stored("vm-1", cpus=2))
    path = tmp_path / "vms" / "vm-1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "vms").iterdir()) == ["vm-1.json"]
    again = SpecStore(tmp_path / "vms")
    again.open()
    assert again.all() == {"vm-1": stored("vm-1", cpus=2)}


def test_unsafe_vm_ids_are_refused(tmp_path: Path) -> None:
    store = SpecStore(tmp_path / "vms")
    store.open()
    for bad in ("../etc/passwd", ".hidden", "a/b", ""):
        with pytest.raises(InvalidInput):
            store.delete(bad)


def test_corrupt_spec_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "vms").mkdir()
    (tmp_path / "vms" / "vm-9.json").write_text("{not json")
    store = SpecStore(tmp_path / "vms")
    store.open()
    assert store.all() == {}
    assert store.corrupt == ["vm-9"]


async def test_reconcile_redefines_lost_vm_and_reports_drift(tmp_path: Path) -> None:
    compute = FakeCompute()
    await compute.define(spec("vm-2", cpus=2), "/pool/vm-2.qcow2")
    await compute.start("vm-2")
    await compute.define(spec("vm-3"), "/pool/vm-3.qcow2")
    await compute.start("vm-3")
    compute.calls.clear()
    store = SpecStore(tmp_path / "vms")
    store.open()
    store.put(stored("vm-1"))  # lost by the hypervisor
    store.put(stored("vm-2", cpus=1))  # resized behind our back

    notes = await reconcile(compute=compute, specs=store)

    assert notes == {"vm-1": [REDEFINED], "vm-2": ["cpus 2 != spec 1"]}
    assert compute.specs["vm-1"] == (spec("vm-1"), "/pool/vm-1.qcow2")
    assert compute.calls == [("define", "vm-1")]  # nothing stopped, nothing undefined
    assert compute.states["vm-2"] == compute.states["vm-3"] == PowerState.running
    reports = {r.vm_id: r for r in vm_reports(await compute.list_vms(), store.all(), notes)}
    assert reports["vm-3"].drift == [UNKNOWN]
    assert reports["vm-2"].drift == ["cpus 2 != spec 1"]
    assert reports["vm-1"].power_state == PowerState.stopped


def test_reports_flag_specs_without_vm() -> None:
    reports = vm_reports({}, {"vm-1": stored("vm-1")}, {})
    assert [(r.vm_id, r.power_state, r.drift) for r in reports] == [
        ("vm-1", PowerState.absent, [MISSING])
    ]


def executor(compute: FakeCompute, store: SpecStore, pool: Path) -> TaskExecutor:
    async def fetch(image: ImageRef, dest: Path) -> None:
        raise AssertionError("no image is fetched in these tests")

    return TaskExecutor(
        compute=compute,
        volumes=FakeVolumes(pool),
        specs=store,
        faults=FaultPlan(),
        fetch=fetch,
        drift={},
    )


async def test_define_refused_by_driver_leaves_no_spec(tmp_path: Path) -> None:
    compute, store = FakeCompute(), SpecStore(tmp_path / "vms")
    store.open()
    ex = executor(compute, store, tmp_path / "pool")
    await ex.run(VmDefine(spec=spec("vm-1", cpus=1)))
    await compute.start("vm-1")
    with pytest.raises(InvalidState):
        await ex.run(VmDefine(spec=spec("vm-1", cpus=4)))
    assert store.get("vm-1") == StoredSpec(
        spec=spec("vm-1"), disk_path=str(tmp_path / "pool/vm-1.qcow2")
    )


class FailingSpecStore(SpecStore):
    def put(self, stored: StoredSpec) -> None:
        raise StorageError("disk full")


async def test_define_undone_when_spec_cannot_be_written(tmp_path: Path) -> None:
    compute, store = FakeCompute(), FailingSpecStore(tmp_path / "vms")
    store.open()
    with pytest.raises(StorageError):
        await executor(compute, store, tmp_path / "pool").run(VmDefine(spec=spec("vm-1")))
    assert compute.states == {}
    assert [op for op, _ in compute.calls] == ["define", "undefine"]


async def test_undefine_failure_restores_spec_and_crash_is_finished_by_reconcile(
    tmp_path: Path,
) -> None:
    compute, store = FakeCompute(), SpecStore(tmp_path / "vms")
    store.open()
    ex = executor(compute, store, tmp_path / "pool")
    await ex.run(VmDefine(spec=spec("vm-1")))
    ex.faults.fail_next("agent.vm.undefine")
    with pytest.raises(InjectedFault):
        await ex.run(VmUndefine(vm_id="vm-1"))
    assert store.get("vm-1") is not None  # fault before any change

    async def broken_undefine(vm_id: str) -> None:
        raise StorageError("libvirt went away")

    real_undefine = compute.undefine
    compute.undefine = broken_undefine  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        await ex.run(VmUndefine(vm_id="vm-1"))
    assert (tmp_path / "vms" / "vm-1.json").exists()
    assert store.pending_deletes() == []

    # A crash between "mark deleting" and the driver call: reconcile finishes the undefine.
    compute.undefine = real_undefine  # type: ignore[method-assign]
    store.begin_delete("vm-1")
    reopened = SpecStore(tmp_path / "vms")
    reopened.open()
    assert reopened.pending_deletes() == ["vm-1"]
    notes = await reconcile(compute=compute, specs=reopened)
    assert notes == {}
    assert compute.states == {}
    assert list((tmp_path / "vms").iterdir()) == []
