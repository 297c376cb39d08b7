"""Simulated VMs with a config drive: defined, started, redefined without it through the task
executor, with no drift at reconciliation."""

from __future__ import annotations

from pathlib import Path

from corral.agent.compute.simulator import SimHost, simulated_host
from corral.agent.executor import TaskExecutor
from corral.agent.faults import FaultPlan
from corral.agent.reconcile import reconcile
from corral.agent.specs import SpecStore
from corral.api.agent import ConfigDrive, ImageRef, VmDefine, VmPower, VmSpec
from corral.api.vms import PowerState

DRIVE = ConfigDrive(meta_data="instance-id: i-1\n", network_config="version: 2\n")


async def test_config_drive_on_a_simulated_vm(tmp_path: Path) -> None:
    sim, pool = simulated_host(SimHost(name="h"))
    await sim.open(lambda _event: None)
    specs = SpecStore(tmp_path / "vms")
    specs.open()

    async def fetch(image: ImageRef, dest: Path) -> None:
        raise AssertionError("nothing is fetched")

    ex = TaskExecutor(
        compute=sim, volumes=pool, specs=specs, faults=FaultPlan(), fetch=fetch, drift={}
    )
    spec = VmSpec(
        vm_id="vm-1", name="vm", cpus=1, memory_mb=64, disk_gb=1, vnc_password="pw",
        config_drive=DRIVE,
    )  # fmt: skip
    await ex.run(VmDefine(spec=spec))
    await ex.run(VmPower(kind="vm.start", vm_id="vm-1"))
    assert sim.vms["vm-1"].spec.config_drive == DRIVE
    stored = specs.get("vm-1")
    assert stored is not None and stored.spec.config_drive == DRIVE
    assert await reconcile(compute=sim, specs=specs) == {}

    await ex.run(VmDefine(spec=spec.model_copy(update={"config_drive": None})))
    assert sim.vms["vm-1"].spec.config_drive is None
    assert await sim.power_state("vm-1") == PowerState.running
    assert await reconcile(compute=sim, specs=specs) == {}
