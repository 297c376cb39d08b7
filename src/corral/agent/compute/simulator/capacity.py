"""Capacity accounting of a simulated host: what its VMs claim, peaks, and the overcommit guard."""

from __future__ import annotations

from corral.agent.compute.simulator.model import SimHost, SimUsage, SimVm
from corral.api.errors import DriverError


class SimCapacity:
    """Running totals of the VMs' claims on one ``SimHost``, updated in O(1) per change.

    ``overcommitted_ever`` becomes true the first time a claim beyond the host is attempted, whether
    it was refused (``host.enforce``, the default) or accepted. ``refusals`` counts refused claims;
    ``peak_*`` are the highest totals ever reached.
    """

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.overcommitted_ever = False
        self.refusals = 0
        self.peak_cpus_defined = 0
        self.peak_memory_mb_defined = 0
        self.peak_memory_mb_running = 0
        self.vms = 0
        self.vms_running = 0
        self.cpus_defined = 0
        self.memory_mb_defined = 0
        self.memory_mb_running = 0
        self.disk_gb_defined = 0

    def usage(self) -> SimUsage:
        """What the VMs claim now."""
        return SimUsage(
            vms=self.vms,
            vms_running=self.vms_running,
            cpus_defined=self.cpus_defined,
            memory_mb_defined=self.memory_mb_defined,
            memory_mb_running=self.memory_mb_running,
            disk_gb_defined=self.disk_gb_defined,
        )

    def check_define(self, vm_id: str, more_cpus: int, more_memory_mb: int) -> None:
        """Refuse growing defined vCPUs/memory beyond ``cpus|memory_mb * overcommit``."""
        host, problems = self.host, []
        memory = self.memory_mb_defined + more_memory_mb
        memory_limit = host.memory_mb * host.memory_overcommit
        if more_memory_mb > 0 and memory > memory_limit:
            problems.append(f"defined memory {memory} MiB > {memory_limit:g} MiB")
        cpus = self.cpus_defined + more_cpus
        if host.cpu_overcommit is not None and more_cpus > 0:
            cpu_limit = host.cpus * host.cpu_overcommit
            if cpus > cpu_limit:
                problems.append(f"defined vCPUs {cpus} > {cpu_limit:g}")
        if problems:
            self._refuse("define", vm_id, problems)

    def check_start(self, vm_id: str, memory_mb: int) -> None:
        """Refuse running more memory than the host has (no overcommit at run time)."""
        wanted = self.memory_mb_running + memory_mb
        if wanted > self.host.memory_mb:
            self._refuse(
                "start", vm_id, [f"running memory {wanted} MiB > {self.host.memory_mb} MiB"]
            )

    def add(self, vm: SimVm, *, sign: int = 1) -> None:
        """Count (``sign=1``) or uncount (``-1``) a defined VM's claims, running or not."""
        self.vms += sign
        self.cpus_defined += sign * vm.cpus
        self.memory_mb_defined += sign * vm.memory_mb
        self.disk_gb_defined += sign * vm.spec.disk_gb
        if vm.active:
            self.vms_running += sign
            self.memory_mb_running += sign * vm.memory_mb
        self._update_peaks()

    def set_active(self, vm: SimVm, active: bool) -> None:
        """The VM started holding (``True``) or released (``False``) its memory."""
        sign = 1 if active else -1
        self.vms_running += sign
        self.memory_mb_running += sign * vm.memory_mb
        self._update_peaks()

    def _update_peaks(self) -> None:
        self.peak_cpus_defined = max(self.peak_cpus_defined, self.cpus_defined)
        self.peak_memory_mb_defined = max(self.peak_memory_mb_defined, self.memory_mb_defined)
        self.peak_memory_mb_running = max(self.peak_memory_mb_running, self.memory_mb_running)

    def _refuse(self, op: str, vm_id: str, problems: list[str]) -> None:
        self.overcommitted_ever = True
        if not self.host.enforce:
            return
        self.refusals += 1
        raise DriverError(
            f"host {self.host.name} cannot {op} VM {vm_id}: {'; '.join(problems)}",
            reason="host_capacity",
            host=self.host.name,
            vm_id=vm_id,
            problems=problems,
        )
