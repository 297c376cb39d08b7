"""A running stack with one host, driven through REST, for the all-or-nothing fault suites.

``FaultEnv`` creates and deletes VMs, reads their state on the server and on the host, and checks
that a failed create or a completed delete left nothing behind (``tests.support.orphans``).
``extra_leftovers`` lets a driver-specific suite add its own checks (e.g. asking libvirt directly).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from corral.agent.runtime import HostRuntime
from corral.server.workflows.engine import FaultPoints, WorkflowEngine
from corral.up import Stack
from tests.support.orphans import STABLE_S, VmState, leftovers, settled, vm_state, wait_op

WHEN = ("before", "after")


async def _no_extra(vm_id: str) -> list[str]:
    return []


@dataclass
class FaultEnv:
    stack: Stack
    c: httpx.AsyncClient
    runtime: HostRuntime
    host_id: str
    image: str = "tiny"
    memory_mb: int = 256
    disk_gb: int = 1
    extra_leftovers: Callable[[str], Awaitable[list[str]]] = _no_extra
    vm_ids: list[str] = field(default_factory=list)

    @property
    def engine(self) -> WorkflowEngine:
        return self.stack.server.services.engine

    @property
    def engine_faults(self) -> FaultPoints:
        return self.engine.faults

    def name(self, label: str) -> str:
        return f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')[:40]}-{len(self.vm_ids)}"

    async def create(self, name: str, *, start: bool = True) -> tuple[dict[str, Any], str]:
        """POST /vms and wait: (the finished operation, the VM id)."""
        body = {
            "name": name,
            "image": self.image,
            "cpus": 1,
            "memory_mb": self.memory_mb,
            "start": start,
        }
        r = await self.c.post("/vms", json=body)
        assert r.status_code == 202, r.text
        self.vm_ids.append(r.json()["target_id"])
        return await wait_op(self.c, r.json()["id"]), r.json()["target_id"]

    def healthy(self, power: str) -> VmState:
        """How a VM of this env with power state ``power`` looks when all is well."""
        return VmState(
            status=power,
            power_state=power,
            host_power_state=power,
            disk=True,
            spec_file=True,
            used=(1, self.memory_mb, self.disk_gb),
        )

    async def created(self, label: str, *, start: bool = True) -> tuple[str, str]:
        """A new VM (running unless ``start=False``): (name, id)."""
        name = self.name(label)
        op, vm_id = await self.create(name, start=start)
        assert op["status"] == "succeeded", op
        # stable: an action refused because of a stale status would fail the test
        await self.intact(name, self.healthy("running" if start else "stopped"), stable=STABLE_S)
        return name, vm_id

    async def delete(self, name: str) -> dict[str, Any]:
        r = await self.c.delete(f"/vms/{name}")
        assert r.status_code == 202, r.text
        return await wait_op(self.c, r.json()["id"])

    async def action(self, name: str, action: str) -> None:
        """Run a power action (a stop is forced: a booting guest ignores ACPI) and wait."""
        body = {"force": True} if action == "stop" else None
        r = await self.c.post(f"/vms/{name}/{action}", json=body)
        assert r.status_code == 202, r.text
        op = await wait_op(self.c, r.json()["id"])
        assert op["status"] == "succeeded", op

    async def state(self, name: str, status: str | None = None) -> VmState:
        """The VM's state; with ``status``, once it has that status (or after a few seconds)."""
        return await settled(
            lambda: vm_state(self.c, self.runtime, name=name, host_id=self.host_id),
            lambda s: status is None or s.status == status,
        )

    async def gone(self, name: str, vm_id: str) -> list[str]:
        """What remains of the VM ([] if nothing)."""
        found = await leftovers(self.c, self.runtime, name=name, vm_id=vm_id, host_id=self.host_id)
        return found + await self.extra_leftovers(vm_id)

    async def assert_create_left_nothing(self, op: dict[str, Any], name: str, vm_id: str) -> None:
        """The create failed and was rolled back completely."""
        assert op["status"] == "failed", op
        assert await self.gone(name, vm_id) == []
        journal = await self.engine.journal(op["id"])
        assert all(r.state == "undone" for r in journal), [(r.name, r.state) for r in journal]

    async def delete_cleanly(self, name: str, vm_id: str) -> None:
        op = await self.delete(name)
        assert op["status"] == "succeeded", op
        assert await self.gone(name, vm_id) == []

    async def intact(self, name: str, before: VmState, *, stable: float = 0.0) -> None:
        """The VM is (or soon becomes: see ``settled``) as ``before``, without error; with
        ``stable``, it stays so for that long."""
        now = await settled(
            lambda: vm_state(self.c, self.runtime, name=name, host_id=self.host_id),
            lambda s: s == before,
            stable=stable,
        )
        assert now == before
        vm = (await self.c.get(f"/vms/{name}")).json()
        assert vm["error"] is None, vm

    async def remove_all(self) -> None:
        """Delete every VM (test teardown; best effort)."""
        for vm in (await self.c.get("/vms")).json()["items"]:
            r = await self.c.delete(f"/vms/{vm['id']}")
            if r.status_code == 202:
                await wait_op(self.c, r.json()["id"])
