"""Operations: the handle of every mutating call."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from corral.api.common import Model
from corral.api.errors import ErrorBody


class OperationStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def done(self) -> bool:
        return self in (
            OperationStatus.succeeded,
            OperationStatus.failed,
            OperationStatus.cancelled,
        )


class Operation(Model):
    id: str
    type: str = Field(examples=["vm.create"])
    target_type: str = Field(examples=["vm"])
    target_id: str | None
    status: OperationStatus
    progress: int = Field(ge=0, le=100)
    message: str = ""
    error: ErrorBody | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    project_id: str | None = Field(None, description="the project it acts in (None: platform)")
    user_id: str | None = Field(None, description="who started it (None: the system)")
