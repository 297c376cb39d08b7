"""Fault injection for the simulator and tests: make the next N calls of an operation fail."""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.api.errors import CorralError, InjectedFault


@dataclass
class FaultPlan:
    """Planned failures by operation name (``"vm.define"``, ``"disk.create"``, ``"vm.start"`` …).

    ``check(op)`` raises the planned error and consumes one planned failure; it is called by the
    simulated drivers at the start of each operation (and by the agent when it runs a task).
    """

    _planned: dict[str, list[CorralError]] = field(default_factory=dict)

    def fail_next(self, op: str, error: CorralError | None = None, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` raise ``error`` (an ``InjectedFault`` by default)."""
        err = error or InjectedFault(f"injected failure of {op}", op=op)
        self._planned.setdefault(op, []).extend([err] * times)

    def check(self, op: str) -> None:
        """Raise the next planned failure of ``op``, if any."""
        queue = self._planned.get(op)
        if queue:
            err = queue.pop(0)
            if not queue:
                del self._planned[op]
            raise err

    def clear(self) -> None:
        self._planned.clear()

    def pending(self) -> dict[str, int]:
        return {op: len(q) for op, q in self._planned.items()}
