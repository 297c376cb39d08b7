"""The NIC tasks of the agent (``nic.attach``, ``nic.detach``): the compute driver plugs and
unplugs the NIC, and the VM's stored spec is kept in step.

Ordering rules (as for ``vm.define`` and the volume tasks, see ``executor``): the driver
changes the VM first, then the spec file is written, so a stored spec only lists NICs the
hypervisor accepted. If the spec write fails, the driver change is undone (attach -> detach,
detach -> attach again) and the task fails. A crash between the two leaves a NIC the spec does
not list (or the reverse); the server's retry of the same task converges, since both steps are
idempotent.

The caller serializes tasks per VM, so a VM's spec is never written by two tasks at once.
Whether the NIC's bridge exists and what flows it has is the network side's business; libvirt
adds the tap to the bridge (see ``corral.agent.compute.libvirt.xml.nic``).
"""

from __future__ import annotations

from corral.agent.compute.driver import ComputeDriver
from corral.agent.spec_changes import clear_drift, undo_after_spec_failure
from corral.agent.specs import SpecStore, StoredSpec
from corral.api.agent import NicSpec, VmSpec
from corral.api.errors import InvalidState, NotFound

UNDO_DETACH_TIMEOUT = 30.0
"""Seconds the guest gets to release a NIC whose attach is being undone."""
NICS_KEY = "nics"
"""The ``describe`` key of a VM's NIC ids; drift notes about them start with it."""


def _find(spec: VmSpec, nic_id: str) -> NicSpec | None:
    return next((n for n in spec.nics if n.nic_id == nic_id), None)


def _with_nics(stored: StoredSpec, nics: list[NicSpec]) -> StoredSpec:
    return stored.model_copy(update={"spec": stored.spec.model_copy(update={"nics": nics})})


class NicTasks:
    """Runs ``nic.*`` tasks against one host's compute driver and spec store; ``drift`` notes
    about the VM's NICs are cleared once a task brought the spec and the VM in step."""

    def __init__(
        self, *, compute: ComputeDriver, specs: SpecStore, drift: dict[str, list[str]]
    ) -> None:
        self.compute = compute
        self.specs = specs
        self.drift = drift

    async def attach(self, vm_id: str, nic: NicSpec) -> None:
        """Plug the NIC into the VM (``compute.attach_nic``: live if it runs, and in its
        definition), then list it in the stored spec, after the VM's other NICs. Attached
        already with the same settings is success. ``NotFound`` if this agent has no spec of
        the VM; ``InvalidState`` if the spec has the NIC id with other settings (detach it
        first) or another NIC with its MAC or port."""
        stored = self.specs.get(vm_id)
        if stored is None:
            raise NotFound(f"VM {vm_id} is not defined on this host", vm_id=vm_id)
        existing = _find(stored.spec, nic.nic_id)
        if existing is not None and existing != nic:
            raise InvalidState(
                f"NIC {nic.nic_id} is already attached to VM {vm_id} with other settings",
                vm_id=vm_id,
                nic_id=nic.nic_id,
            )
        for other in stored.spec.nics:
            if other.nic_id != nic.nic_id and (other.mac == nic.mac or other.port == nic.port):
                raise InvalidState(
                    f"VM {vm_id} has another NIC with MAC {nic.mac} or port {nic.port}",
                    vm_id=vm_id,
                    nic_id=nic.nic_id,
                    used_by=other.nic_id,
                )
        await self.compute.attach_nic(vm_id, nic)
        if existing is not None:
            clear_drift(self.drift, vm_id, NICS_KEY)
            return
        try:
            await self.specs.put_async(_with_nics(stored, [*stored.spec.nics, nic]))
        except BaseException:
            await undo_after_spec_failure(
                vm_id,
                "NIC attach",
                self.compute.detach_nic(vm_id, nic.nic_id, UNDO_DETACH_TIMEOUT),
            )
            raise
        clear_drift(self.drift, vm_id, NICS_KEY)

    async def detach(self, vm_id: str, nic_id: str, timeout: float) -> None:
        """Unplug the NIC (``compute.detach_nic``, waiting up to ``timeout`` s for the guest to
        release it: ``InvalidState`` if it does not, nothing changed), then drop it from the
        stored spec. Not attached, or the VM unknown here, is success."""
        stored = self.specs.get(vm_id)
        await self.compute.detach_nic(vm_id, nic_id, timeout)
        old = _find(stored.spec, nic_id) if stored is not None else None
        if stored is None or old is None:
            return
        try:
            await self.specs.put_async(
                _with_nics(stored, [n for n in stored.spec.nics if n.nic_id != nic_id])
            )
        except BaseException:
            await undo_after_spec_failure(vm_id, "NIC detach", self.compute.attach_nic(vm_id, old))
            raise
        clear_drift(self.drift, vm_id, NICS_KEY)
