"""What the agent's device tasks (volumes, NICs) share when they change a VM's definition and its
stored spec: undoing the driver change after the spec write failed, and dropping the drift notes
about the devices they just made match."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from corral.api.errors import CorralError

log = logging.getLogger(__name__)


def clear_drift(drift: dict[str, list[str]], vm_id: str, key: str) -> None:
    """Drop the VM's drift notes about ``key`` (those starting with ``"<key> "``); the VM's
    entry goes when no note is left."""
    notes = [n for n in drift.get(vm_id, []) if not n.startswith(f"{key} ")]
    if notes:
        drift[vm_id] = notes
    else:
        drift.pop(vm_id, None)


async def undo_after_spec_failure(vm_id: str, what: str, undo: Awaitable[None]) -> None:
    """Run ``undo`` (the driver change reversed, the spec write having failed); a failure is
    logged, not raised: the spec write's error is the one the caller raises."""
    try:
        await undo
    except CorralError as exc:
        log.error("vm %s: cannot undo %s after the spec write failed: %s", vm_id, what, exc)
