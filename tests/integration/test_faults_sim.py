"""All or nothing: a failure at any step of ``vm create`` / ``vm delete`` leaves no orphan.

Simulator driver, SQLite, one stack for the module. Faults are injected at every step of the
workflows (before and after it; the step list comes from the Workflow objects, so new steps are
covered), in the simulated drivers (``disk.create``, ``vm.start`` …) and in the agent
(``agent.<task kind>``), including failures of the undos themselves. After a failed create nothing
is left: no row, no claim, no operation in progress, no VM, disk or spec file on the host. A delete
that fails before its point of no return leaves the VM as it was and usable; after it, the delete
goes forward and the VM is gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from corral.server.workflows.engine import FORWARD_ATTEMPTS, UNDO_ATTEMPTS, Workflow
from corral.server.workflows.vm_create import VM_CREATE
from corral.server.workflows.vm_delete import VM_DELETE
from tests.integration.test_vm_sim import make_qcow2
from tests.support.fault_env import WHEN, FaultEnv
from tests.support.orphans import VmState
from tests.support.stack import api_client, running_stack, upload_image

pytestmark = pytest.mark.asyncio(loop_scope="module")

DONE_BY_REQUEST = ("record", "claim")  # journaled done by the POST /vms transaction itself
CREATE_OPS = ["disk.create", "vm.define", "vm.start"]
DELETE_OPS = ["vm.stop", "vm.undefine", "disk.delete"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultEnv]:
    tmp = tmp_path_factory.mktemp("faults-sim")
    async with running_stack(tmp) as stack, api_client(stack) as c:
        await upload_image(c, "tiny", make_qcow2(tmp / "tiny.qcow2"))
        host_id = (await c.get("/hosts")).json()["items"][0]["id"]
        yield FaultEnv(stack, c, next(iter(stack.agent.runtimes.values())), host_id)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: FaultEnv) -> AsyncIterator[None]:
    """Each case starts without faults and leaves no VM, even when it fails."""
    yield
    env.engine_faults.clear()
    env.runtime.faults.clear()
    await env.remove_all()


def steps(wf: Workflow) -> list[tuple[str, str]]:
    return [(s.name, when) for s in wf.steps for when in WHEN]


# --- vm create ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("step", "when"), steps(VM_CREATE))
async def test_create_engine_fault(env: FaultEnv, step: str, when: str) -> None:
    env.engine_faults.inject(VM_CREATE.type, step, when)  # type: ignore[arg-type]
    name = env.name(f"c-{step}-{when}")
    op, vm_id = await env.create(name)
    if step in DONE_BY_REQUEST:  # these ran in the request's transaction: nothing to fail
        assert op["status"] == "succeeded", op
        assert env.engine_faults.planned == {(VM_CREATE.type, step, when): 1}
    elif VM_CREATE.is_forward(VM_CREATE.step_index(step)):  # retried, goes forward
        assert op["status"] == "succeeded", op
        assert not env.engine_faults.planned
        assert (await env.state(name, "running")).host_power_state == "running"
    else:
        assert not env.engine_faults.planned
        await env.assert_create_left_nothing(op, name, vm_id)
        return
    await env.delete_cleanly(name, vm_id)


@pytest.mark.parametrize("op", [*CREATE_OPS, *(f"agent.{o}" for o in CREATE_OPS)])
async def test_create_driver_and_agent_fault(env: FaultEnv, op: str) -> None:
    env.runtime.faults.fail_next(op)
    name = env.name(f"c-{op}")
    result, vm_id = await env.create(name)
    assert env.runtime.faults.pending() == {}
    await env.assert_create_left_nothing(result, name, vm_id)


@pytest.mark.parametrize(
    ("fault", "undo_fault"),
    [
        ("vm.start", "vm.stop"),
        ("vm.start", "vm.undefine"),
        ("vm.start", "disk.delete"),
        ("vm.define", "agent.vm.undefine"),
        ("vm.start", "agent.disk.delete"),
    ],
)
async def test_create_rollback_retries_a_failed_undo(
    env: FaultEnv, fault: str, undo_fault: str
) -> None:
    """An undo that fails once is retried (under a new task id: the agent would answer the old one
    with its failure) and the rollback still completes."""
    env.runtime.faults.fail_next(fault)
    env.runtime.faults.fail_next(undo_fault)
    name = env.name(f"c-{fault}-{undo_fault}")
    op, vm_id = await env.create(name)
    assert env.runtime.faults.pending() == {}
    await env.assert_create_left_nothing(op, name, vm_id)


async def test_create_unfinished_rollback_keeps_the_vm_for_delete(env: FaultEnv) -> None:
    """An undo failing every retry: the rollback keeps the row and its claim (VM in ``error``)
    rather than forget a domain still defined on the host; a delete then removes everything."""
    env.runtime.faults.fail_next("vm.start")
    env.runtime.faults.fail_next("vm.undefine", times=UNDO_ATTEMPTS)
    name = env.name("c-undo-fails")
    op, vm_id = await env.create(name)
    assert op["status"] == "failed", op
    assert op["error"]["context"]["rollback_failures"], op
    got = await env.state(name, "error")
    assert (got.status, got.host_power_state) == ("error", "stopped"), got
    assert got.used == (1, env.memory_mb, 1), got  # still claimed: the VM exists on the host
    await env.delete_cleanly(name, vm_id)


async def test_create_failing_past_point_of_no_return_leaves_a_deletable_vm(
    env: FaultEnv,
) -> None:
    env.engine_faults.inject(VM_CREATE.type, "finalize", "before", times=FORWARD_ATTEMPTS)
    name = env.name("c-finalize-fails")
    op, vm_id = await env.create(name)
    assert op["status"] == "failed", op
    got = await env.state(name, "error")
    assert (got.status, got.power_state, got.host_power_state) == ("error", "running", "running")
    await env.delete_cleanly(name, vm_id)


# --- vm delete ----------------------------------------------------------------------------------


async def assert_intact_and_usable(env: FaultEnv, name: str, vm_id: str, before: VmState) -> None:
    """The VM is as it was before the failed delete; it stops and starts; it deletes cleanly."""
    await env.intact(name, before)
    for action, power in (("stop", "stopped"), ("start", "running")):
        await env.action(name, action)
        assert await env.runtime.compute.power_state(vm_id) == power
    await env.delete_cleanly(name, vm_id)


@pytest.mark.parametrize(("step", "when"), steps(VM_DELETE))
async def test_delete_engine_fault(env: FaultEnv, step: str, when: str) -> None:
    name, vm_id = await env.created(f"d-{step}-{when}")
    before = env.healthy("running")
    env.engine_faults.inject(VM_DELETE.type, step, when)  # type: ignore[arg-type]
    op = await env.delete(name)
    assert not env.engine_faults.planned
    if VM_DELETE.is_forward(VM_DELETE.step_index(step)):
        assert op["status"] == "succeeded", op
        assert await env.gone(name, vm_id) == []
    else:
        assert op["status"] == "failed", op
        await assert_intact_and_usable(env, name, vm_id, before)


@pytest.mark.parametrize("op", [*DELETE_OPS, *(f"agent.{o}" for o in DELETE_OPS)])
async def test_delete_driver_and_agent_fault(env: FaultEnv, op: str) -> None:
    name, vm_id = await env.created(f"d-{op}")
    before = env.healthy("running")
    env.runtime.faults.fail_next(op)
    result = await env.delete(name)
    assert env.runtime.faults.pending() == {}
    if op.endswith("disk.delete"):  # past the point of no return: retried, goes forward
        assert result["status"] == "succeeded", result
        assert await env.gone(name, vm_id) == []
    else:
        assert result["status"] == "failed", result
        await assert_intact_and_usable(env, name, vm_id, before)


async def test_delete_rollback_retries_a_failed_undo(env: FaultEnv) -> None:
    name, vm_id = await env.created("d-undo-retried")
    before = env.healthy("running")
    env.runtime.faults.fail_next("agent.vm.undefine")
    env.runtime.faults.fail_next("vm.define")  # the redefine (undo of undefine) fails once
    env.runtime.faults.fail_next("vm.start")  # and so does the restart
    op = await env.delete(name)
    assert op["status"] == "failed", op
    assert env.runtime.faults.pending() == {}
    await assert_intact_and_usable(env, name, vm_id, before)


@pytest.mark.parametrize("power", ["stopped", "paused"])
async def test_delete_rollback_restores_power_state(env: FaultEnv, power: str) -> None:
    name, vm_id = await env.created(f"d-{power}", start=power != "stopped")
    if power == "paused":
        await env.action(name, "pause")
    before = env.healthy(power)
    await env.intact(name, before)
    env.runtime.faults.fail_next("vm.undefine")
    assert (await env.delete(name))["status"] == "failed"
    await env.intact(name, before)
    await env.delete_cleanly(name, vm_id)


@pytest.mark.parametrize("op", ["disk.delete", "agent.disk.delete"])
async def test_delete_failing_past_point_of_no_return_can_be_retried(
    env: FaultEnv, op: str
) -> None:
    """The delete fails after undefining: the VM stays (``error``); deleting again finishes it."""
    name, vm_id = await env.created(f"d-retry-{op}")
    env.runtime.faults.fail_next(op, times=FORWARD_ATTEMPTS)
    result = await env.delete(name)
    assert result["status"] == "failed", result
    got = await env.state(name, "error")
    assert (got.status, got.host_power_state, got.disk, got.spec_file) == (
        "error",
        "absent",
        True,
        False,
    )
    await env.delete_cleanly(name, vm_id)


async def test_delete_failing_at_forget_can_be_retried(env: FaultEnv) -> None:
    """``forget`` failing every retry: the row stays in ``error`` and a retried delete works."""
    name, vm_id = await env.created("d-forget-fails")
    env.engine_faults.inject(VM_DELETE.type, "forget", "before", times=FORWARD_ATTEMPTS)
    assert (await env.delete(name))["status"] == "failed"
    got = await env.state(name, "error")
    assert (got.status, got.host_power_state, got.disk) == ("error", "absent", False)
    await env.delete_cleanly(name, vm_id)
