"""The in-memory state of the fake server: resources, operations that advance poll by poll."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from corral.api.common import Resource
from corral.api.errors import CorralError, NotFound
from corral.api.hosts import Host
from corral.api.images import Image
from corral.api.offerings import Offering
from corral.api.operations import Operation, OperationStatus
from corral.api.vms import Vm
from corral.api.zones import Cluster, Zone

R = TypeVar("R", bound=Resource)

Effect = Callable[[], object]


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class FakeOperation:
    """An operation and what happens when it finishes (``effect``) or fails/is cancelled (``undo``)."""

    model: Operation
    steps_left: int
    effect: Effect | None = None
    undo: Effect | None = None
    error: CorralError | None = None


@dataclass
class FakeState:
    """Every resource by id, the operations, the uploaded image bytes and the valid tokens."""

    zones: dict[str, Zone] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    offerings: dict[str, Offering] = field(default_factory=dict)
    vms: dict[str, Vm] = field(default_factory=dict)
    operations: dict[str, FakeOperation] = field(default_factory=dict)
    image_data: dict[str, bytes] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    failures: dict[str, CorralError] = field(default_factory=dict)
    op_steps: int = 2

    def collection(self, name: str) -> dict[str, Any]:
        """The dict of one collection by its URL name (``vms``...); ``NotFound`` if none."""
        tables: dict[str, dict[str, Any]] = {
            "zones": self.zones,
            "clusters": self.clusters,
            "hosts": self.hosts,
            "images": self.images,
            "offerings": self.offerings,
            "vms": self.vms,
        }
        table = tables.get(name)
        if table is None:
            raise NotFound(f"no such collection: {name}")
        return table

    @staticmethod
    def find(table: dict[str, R], ref: str, kind: str) -> R:
        """The resource with id or name ``ref``; ``NotFound`` if none."""
        if ref in table:
            return table[ref]
        for item in table.values():
            if item.name == ref:
                return item
        raise NotFound(f"{kind} {ref} not found", kind=kind, ref=ref)

    def start_operation(
        self,
        op_type: str,
        target_type: str,
        target_id: str | None,
        *,
        effect: Effect | None = None,
        undo: Effect | None = None,
        immediate: bool = False,
    ) -> Operation:
        """Record an operation. ``immediate`` ones (pure DB changes) are finished already; others
        advance one step each time they are fetched and finish after ``op_steps`` fetches."""
        model = Operation(
            id=new_id(),
            type=op_type,
            target_type=target_type,
            target_id=target_id,
            status=OperationStatus.queued,
            progress=0,
            created_at=now(),
        )
        op = FakeOperation(model, self.op_steps, effect, undo, self.failures.pop(op_type, None))
        self.operations[model.id] = op
        if immediate:
            self._finish(op)
        return op.model

    def advance(self, op: FakeOperation) -> None:
        """One step of a running operation (called on every fetch)."""
        if op.model.status.done:
            return
        op.steps_left -= 1
        if op.steps_left <= 0:
            self._finish(op)
            return
        done = self.op_steps - op.steps_left
        op.model = op.model.model_copy(
            update={
                "status": OperationStatus.running,
                "progress": 100 * done // self.op_steps,
                "message": f"step {done} of {self.op_steps}",
                "started_at": op.model.started_at or now(),
            }
        )

    def _finish(self, op: FakeOperation) -> None:
        update: dict[str, Any] = {"finished_at": now(), "started_at": op.model.started_at or now()}
        if op.error is None:
            if op.effect is not None:
                op.effect()
            update.update(status=OperationStatus.succeeded, progress=100, message="done")
        else:
            if op.undo is not None:
                op.undo()
            update.update(status=OperationStatus.failed, error=op.error.to_body(), message="failed")
        op.model = op.model.model_copy(update=update)

    def cancel(self, op: FakeOperation) -> None:
        """Cancel a queued operation (the caller checked it is queued)."""
        if op.undo is not None:
            op.undo()
        op.model = op.model.model_copy(
            update={"status": OperationStatus.cancelled, "finished_at": now()}
        )
