"""All or nothing with the real libvirt driver and directory pool (TCG guests).

The same promises as test_faults_sim.py, on a real host: a create failing at any step leaves no
domain ``corral-<vm_id>`` (asked of libvirt directly), no disk directory in the agent's pool, no
spec file, no console log, no row and no claim; a delete failing before its point of no return
leaves the VM defined, with its disk, running if it ran; after it, the VM is gone. Faults: every
step of both workflows (before and after), and the agent's ``agent.<task kind>`` faults (the
libvirt driver has no fault plan of its own).

One stack serves the whole module (the agent probes KVM once, ~4.5 s, at its first define). VMs
are created stopped unless starting matters for the case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from corral.agent.compute.libvirt.xml.compose import console_log_path
from corral.server.workflows.vm_create import VM_CREATE
from corral.server.workflows.vm_delete import VM_DELETE
from tests.support.fault_env import WHEN, FaultEnv
from tests.support.stack import api_client, running_stack, upload_image

libvirt = pytest.importorskip("libvirt")

pytestmark = [pytest.mark.libvirt, pytest.mark.asyncio(loop_scope="module")]

URI = "qemu:///system"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-test-image"
DONE_BY_REQUEST = ("record", "claim")
STARTS = ("start", "finalize")  # create cases that need the VM started
RUNNING = ("mark", "stop", "undefine")  # delete cases whose rollback must restart the VM


def tiny_image_path() -> Path:
    """``$CORRAL_TEST_IMAGE``, else what ``scripts/build-test-image`` prints (cached)."""
    env = os.environ.get("CORRAL_TEST_IMAGE")
    if env and Path(env).is_file():
        return Path(env)
    out = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        c = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd not reachable at {URI}: {exc}")
    yield c
    c.close()


def domain_exists(conn: Any, vm_id: str) -> bool:
    try:
        conn.lookupByName(f"corral-{vm_id}")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(conn: Any) -> AsyncIterator[FaultEnv]:
    image = tiny_image_path()
    data = Path(tempfile.mkdtemp(prefix="corral-test-faults-", dir="/var/tmp"))
    data.chmod(0o755)  # QEMU (libvirt-qemu) must reach the pool under it
    fault_env: FaultEnv | None = None
    try:
        async with running_stack(data, driver="libvirt") as stack, api_client(stack) as c:
            await upload_image(c, "tiny", image)
            host_id = (await c.get("/hosts")).json()["items"][0]["id"]
            runtime = next(iter(stack.agent.runtimes.values()))
            console_dir = data / "agent" / "console"

            async def extra(vm_id: str) -> list[str]:
                found = []
                if domain_exists(conn, vm_id):
                    found.append(f"libvirt domain corral-{vm_id}")
                if console_log_path(console_dir, vm_id).exists():
                    found.append("console log")
                return found

            fault_env = FaultEnv(stack, c, runtime, host_id, memory_mb=128, extra_leftovers=extra)
            yield fault_env
    finally:
        for vm_id in fault_env.vm_ids if fault_env else []:
            try:
                dom = conn.lookupByName(f"corral-{vm_id}")
            except libvirt.libvirtError:
                continue
            for step in (dom.destroy, dom.undefine):
                try:
                    step()
                except libvirt.libvirtError:
                    pass
        shutil.rmtree(data, ignore_errors=True)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def clean(env: FaultEnv) -> AsyncIterator[None]:
    yield
    env.engine_faults.clear()
    env.runtime.faults.clear()
    await env.remove_all()


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VM_CREATE.steps for w in WHEN])
async def test_create_engine_fault(env: FaultEnv, step: str, when: str) -> None:
    env.engine_faults.inject(VM_CREATE.type, step, when)  # type: ignore[arg-type]
    name = env.name(f"c-{step}-{when}")
    op, vm_id = await env.create(name, start=step in STARTS)
    if step in DONE_BY_REQUEST or VM_CREATE.is_forward(VM_CREATE.step_index(step)):
        assert op["status"] == "succeeded", op  # not failable / retried forward
        await env.delete_cleanly(name, vm_id)
    else:
        await env.assert_create_left_nothing(op, name, vm_id)


@pytest.mark.parametrize("op", ["agent.disk.create", "agent.vm.define", "agent.vm.start"])
async def test_create_agent_fault(env: FaultEnv, op: str) -> None:
    env.runtime.faults.fail_next(op)
    name = env.name(f"c-{op}")
    result, vm_id = await env.create(name, start=op == "agent.vm.start")
    assert env.runtime.faults.pending() == {}
    await env.assert_create_left_nothing(result, name, vm_id)


async def test_create_rollback_retries_a_failed_undo(env: FaultEnv) -> None:
    env.runtime.faults.fail_next("agent.vm.start")
    env.runtime.faults.fail_next("agent.vm.undefine")
    env.runtime.faults.fail_next("agent.disk.delete")
    name = env.name("c-undo-retried")
    op, vm_id = await env.create(name)
    assert env.runtime.faults.pending() == {}
    await env.assert_create_left_nothing(op, name, vm_id)


@pytest.mark.parametrize(("step", "when"), [(s.name, w) for s in VM_DELETE.steps for w in WHEN])
async def test_delete_engine_fault(env: FaultEnv, conn: Any, step: str, when: str) -> None:
    power = "running" if step in RUNNING else "stopped"
    name, vm_id = await env.created(f"d-{step}-{when}", start=power == "running")
    env.engine_faults.inject(VM_DELETE.type, step, when)  # type: ignore[arg-type]
    op = await env.delete(name)
    assert not env.engine_faults.planned
    if VM_DELETE.is_forward(VM_DELETE.step_index(step)):
        assert op["status"] == "succeeded", op
        assert await env.gone(name, vm_id) == []
    else:
        assert op["status"] == "failed", op
        await env.intact(name, env.healthy(power))
        assert domain_exists(conn, vm_id)
        await env.delete_cleanly(name, vm_id)


@pytest.mark.parametrize("op", ["agent.vm.stop", "agent.vm.undefine", "agent.disk.delete"])
async def test_delete_agent_fault(env: FaultEnv, op: str) -> None:
    name, vm_id = await env.created(f"d-{op}", start=op != "agent.disk.delete")
    env.runtime.faults.fail_next(op)
    result = await env.delete(name)
    assert env.runtime.faults.pending() == {}
    if op == "agent.disk.delete":  # past the point of no return: retried, goes forward
        assert result["status"] == "succeeded", result
        assert await env.gone(name, vm_id) == []
    else:
        assert result["status"] == "failed", result
        await env.intact(name, env.healthy("running"))
        await env.action(name, "stop")  # still usable
        await env.action(name, "start")
        await env.delete_cleanly(name, vm_id)
