"""NICs of simulated VMs: hot-plug and unplug on the in-memory model.

As for data volumes, the simulated hypervisor has one definition per VM: a change made while
the VM is live (running or paused) is a hot-plug and applies to both. No switch is simulated:
the NIC's port, tag and limits are only recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from corral.agent.compute.simulator.model import SimLatencies, SimVm
from corral.api.agent import NicSpec
from corral.api.errors import InvalidInput, InvalidState, NotFound


def nics_of(vm_id: str, nics: Sequence[NicSpec]) -> dict[str, NicSpec]:
    """The NICs of a (re)definition by NIC id. ``InvalidInput`` for two NICs with one id, MAC
    or port (as libvirt refuses them)."""
    result: dict[str, NicSpec] = {}
    for nic in nics:
        if any(_clash(nic, other) or nic.nic_id == other.nic_id for other in result.values()):
            raise InvalidInput(
                "the NICs of a VM must have distinct ids, MACs and ports", vm_id=vm_id
            )
        result[nic.nic_id] = nic
    return result


def _clash(nic: NicSpec, other: NicSpec) -> bool:
    return nic.mac == other.mac or nic.port == other.port


class SimNicOps:
    """The NIC half of ``SimulatorDriver`` (fault ops ``vm.attach_nic``, ``vm.detach_nic``;
    latencies of the same names)."""

    latencies: SimLatencies
    _releases: dict[tuple[str, str], asyncio.Event]

    def _require(self, vm_id: str) -> SimVm:
        raise NotImplementedError

    async def _begin(self, op: str, latency: float) -> None:
        raise NotImplementedError

    async def attach_nic(self, vm_id: str, nic: NicSpec) -> None:
        """Attached (same NIC id) is success whatever its settings; another NIC with the MAC
        or port: ``InvalidState``."""
        await self._begin("vm.attach_nic", self.latencies.attach_nic)
        vm = self._require(vm_id)
        if nic.nic_id in vm.nics:
            return
        for other in vm.nics.values():
            if _clash(nic, other):
                raise InvalidState(
                    f"VM {vm_id} has another NIC with MAC {nic.mac} or port {nic.port}",
                    vm_id=vm_id,
                    nic_id=nic.nic_id,
                    used_by=other.nic_id,
                )
        vm.nics[nic.nic_id] = nic

    async def detach_nic(self, vm_id: str, nic_id: str, timeout: float) -> None:
        """A live VM whose guest holds the NIC (``guest_holds_nic``) keeps it unless the guest
        lets go within ``timeout``: then ``InvalidState``."""
        await self._begin("vm.detach_nic", self.latencies.detach_nic)
        try:
            vm = self._require(vm_id)
        except NotFound:
            return
        if nic_id not in vm.nics:
            return
        if vm.active and nic_id in vm.held_nics:
            released = self._releases.setdefault((vm_id, f"nic:{nic_id}"), asyncio.Event())
            try:
                await asyncio.wait_for(released.wait(), timeout)
            except TimeoutError:
                raise InvalidState(
                    f"the guest did not release the NIC within {timeout:g} s",
                    vm_id=vm_id,
                    nic_id=nic_id,
                    timeout=timeout,
                    power_state=vm.state.value,
                ) from None
        vm.nics.pop(nic_id, None)
        vm.held_nics.discard(nic_id)

    # --- test helpers ------------------------------------------------------------------------

    def guest_holds_nic(self, vm_id: str, nic_id: str, hold: bool = True) -> None:
        """Make the guest refuse (``hold``) or accept hot-unplugs of the NIC; accepting
        completes a detach that is waiting. ``NotFound`` if the VM does not have the NIC."""
        vm = self._require(vm_id)
        if nic_id not in vm.nics:
            raise NotFound(
                f"NIC {nic_id} is not attached to VM {vm_id}", vm_id=vm_id, nic_id=nic_id
            )
        if hold:
            vm.held_nics.add(nic_id)
            return
        vm.held_nics.discard(nic_id)
        waiter = self._releases.pop((vm_id, f"nic:{nic_id}"), None)
        if waiter is not None:
            waiter.set()
