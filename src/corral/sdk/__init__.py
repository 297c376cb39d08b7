"""The Corral Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio) over the REST API.

    from corral.sdk import Client

    client = Client.login("https://corral:8443", "admin", "secret", verify="server.pem")
    op = client.vms.create("web1", image="debian-12", offering="small")
    op.wait(on_progress=lambda state: print(state.progress))
    vm = client.vms.get(op.target_id)

Every mutating call returns an ``Operation`` handle (``AsyncOperation`` for the async client); every
failure raises a ``corral.api.errors.CorralError`` subclass (``NotFound``, ``NoHostAvailable``...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient
    from corral.sdk._async.operation import AsyncOperation
    from corral.sdk._base import ProgressCallback
    from corral.sdk._sync.client import Client
    from corral.sdk._sync.operation import Operation, OperationCallback

__all__ = [
    "AsyncClient",
    "AsyncOperation",
    "Client",
    "Operation",
    "OperationCallback",
    "ProgressCallback",
]

# Imported on first use, so that the CLI loads only the blocking client (start-up time).
_LAZY = {
    "AsyncClient": "corral.sdk._async.client",
    "AsyncOperation": "corral.sdk._async.operation",
    "ProgressCallback": "corral.sdk._base",
    "Client": "corral.sdk._sync.client",
    "Operation": "corral.sdk._sync.operation",
    "OperationCallback": "corral.sdk._sync.operation",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corral.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
