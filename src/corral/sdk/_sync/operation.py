"""The handle of a server operation: refresh, long-poll until done, cancel."""

# Generated from corral/sdk/_async/operation.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from corral.api.errors import CorralError, ErrorBody, OperationCancelled, Timeout
from corral.api.operations import Operation as OperationModel
from corral.api.operations import OperationStatus
from corral.sdk._base import (
    POLL_CHUNK,
    PROGRESS_POLL_CHUNK,
    monotonic,
    parse,
    quote_ref,
    sync_sleep,
    wait_param,
)

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client

OperationCallback = Callable[[OperationModel], object]
"""Called with the operation's latest state whenever its status, progress or message changes."""

_MIN_BACKOFF = 0.2
_MAX_BACKOFF = 2.0


class Operation:
    """A server operation plus the client that can follow it.

    The fields of ``corral.api.operations.Operation`` are readable as attributes; ``model`` is the
    latest state fetched.
    """

    def __init__(self, client: Client, model: OperationModel) -> None:
        self._client = client
        self.model = model

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def type(self) -> str:
        return self.model.type

    @property
    def target_type(self) -> str:
        return self.model.target_type

    @property
    def target_id(self) -> str | None:
        return self.model.target_id

    @property
    def status(self) -> OperationStatus:
        return self.model.status

    @property
    def progress(self) -> int:
        return self.model.progress

    @property
    def message(self) -> str:
        return self.model.message

    @property
    def error(self) -> ErrorBody | None:
        return self.model.error

    @property
    def created_at(self) -> datetime:
        return self.model.created_at

    @property
    def started_at(self) -> datetime | None:
        return self.model.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self.model.finished_at

    @property
    def done(self) -> bool:
        """Whether the operation has finished (succeeded, failed or cancelled)."""
        return self.model.status.done

    def refresh(self) -> Operation:
        """Fetch the latest state; returns ``self``."""
        self.model = self._fetch(None)
        return self

    def _fetch(self, wait: float | None) -> OperationModel:
        path = f"/operations/{quote_ref(self.id)}"
        if wait is None:
            response = self._client.request("GET", path)
        else:
            response = self._client.request(
                "GET",
                path,
                params={"wait": wait_param(wait)},
                timeout=self._client.timeout + wait,
            )
        return parse(OperationModel, response.content)

    def wait(
        self,
        timeout: float | None = None,
        on_progress: OperationCallback | None = None,
    ) -> Operation:
        """Long-poll until the operation is done; returns ``self`` if it succeeded.

        Polls ``GET /operations/{id}?wait=`` in chunks (10 s, or 1 s when ``on_progress`` is
        given), calling ``on_progress`` with the current state first and then on every change.
        Raises the operation's own error (``CorralError.from_body``, e.g. ``NoHostAvailable``) if it
        failed, ``OperationCancelled`` if it was cancelled, and ``Timeout`` if it is still not done
        after ``timeout`` seconds (the operation goes on; wait again or cancel it).
        """
        deadline = None if timeout is None else monotonic() + timeout
        chunk = POLL_CHUNK if on_progress is None else PROGRESS_POLL_CHUNK
        backoff = _MIN_BACKOFF
        if on_progress is not None:
            on_progress(self.model)
        while not self.done:
            remaining = chunk if deadline is None else min(chunk, deadline - monotonic())
            if remaining <= 0:
                raise Timeout(
                    f"operation {self.id} ({self.type}) is still {self.status} after {timeout} s",
                    operation_id=self.id,
                )
            before = self.model
            asked_at = monotonic()
            self.model = self._fetch(remaining)
            changed = (before.status, before.progress, before.message) != (
                self.model.status,
                self.model.progress,
                self.model.message,
            )
            if changed and on_progress is not None:
                on_progress(self.model)
            if changed or self.done:
                backoff = _MIN_BACKOFF
            elif monotonic() - asked_at < remaining / 2:
                # The server answered early without news: do not hammer it.
                sync_sleep(min(backoff, remaining))
                backoff = min(backoff * 2, _MAX_BACKOFF)
        self.raise_for_error()
        return self

    def raise_for_error(self) -> None:
        """Raise the operation's error if it failed, ``OperationCancelled`` if it was cancelled."""
        if self.status is OperationStatus.cancelled:
            raise OperationCancelled(
                f"operation {self.id} ({self.type}) was cancelled", operation_id=self.id
            )
        if self.status is OperationStatus.failed:
            if self.error is None:
                err = CorralError(self.message or f"operation {self.id} ({self.type}) failed")
            else:
                err = CorralError.from_body(self.error)
            err.context.setdefault("operation_id", self.id)
            raise err

    def cancel(self) -> Operation:
        """Ask the server to cancel; ``NotCancellable`` if it is already running or done."""
        response = self._client.request("POST", f"/operations/{quote_ref(self.id)}/cancel")
        self.model = parse(OperationModel, response.content)
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.type} {self.status} {self.progress}%>"
