"""Audit events: one immutable record per state-changing API call and per login attempt."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from corral.api.common import Model


class AuditResult(StrEnum):
    """``success``: the call was answered with a 1xx-3xx status; ``failure`` otherwise."""

    success = "success"
    failure = "failure"


class AuditExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class AuditEvent(Model):
    """What was asked, by whom, from where, and how it ended.

    ``action`` is a stable dotted name derived from the route (``vm.create``, ``vm.resize``,
    ``auth.login``, ``project.member.delete``). ``target_*`` name the resource acted on (the
    operation's target, else the route's last path parameter). ``request`` is a summary of the
    request with secrets masked (``***``) and at most about 4 KB: ``{"body": ...}`` for JSON bodies,
    ``{"content_type", "size"}`` for others, ``{"truncated": true, "size", "excerpt"}`` when too big;
    ``query`` holds the query parameters when there are any. ``actor_*`` are null when nobody could
    be identified (a failed login names the user it tried in ``actor_name``).
    """

    id: int
    started_at: datetime
    finished_at: datetime
    actor_id: str | None = None
    actor_name: str | None = None
    auth_method: str | None = Field(None, examples=["token", "access_key", "none"])
    project_id: str | None = None
    client_ip: str | None = None
    method: str = Field(examples=["POST"])
    path: str = Field(examples=["/api/v1/vms"])
    action: str = Field(examples=["vm.create"])
    target_type: str | None = Field(None, examples=["vm"])
    target_id: str | None = None
    status_code: int
    result: AuditResult
    error_code: str | None = Field(None, examples=["invalid_input"])
    error_message: str | None = None
    operation_id: str | None = None
    request: dict[str, Any] | None = None
