"""Storage pools (``client.storage_pools``): list, get, create, update, attach/detach clusters."""

# Generated from corral/sdk/_async/storage.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from corral.api.errors import CorralError
from corral.api.storage import (
    PoolClusterAttach,
    PoolHostReport,
    StoragePool,
    StoragePoolCreate,
    StoragePoolUpdate,
)
from corral.sdk._base import build, quote_ref
from corral.sdk._sync.operation import Operation
from corral.sdk._sync.resources import Collection

_HOST_REPORTS = TypeAdapter(list[PoolHostReport])

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client


class StoragePools(Collection[StoragePool]):
    """``client.storage_pools``: where VM disks live (platform admins). Credentials are sent,
    never read back (``has_credentials``)."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/storage-pools", StoragePool)

    def create(
        self,
        name: str,
        *,
        type: str,
        settings: Mapping[str, Any],
        credentials: str | None = None,
        overcommit: float = 1.0,
        clusters: Sequence[str] = (),
    ) -> Operation:
        """A pool of ``type`` (local, nfs, iscsi, rbd) with that type's ``settings`` (local:
        path; nfs: server, export; iscsi: portal, iqn; rbd: monitors, pool, user), attached to
        ``clusters`` (ids or names)."""
        body = build(
            StoragePoolCreate,
            name=name,
            type=type,
            settings=dict(settings),
            credentials=credentials,
            overcommit=overcommit,
            clusters=list(clusters),
        )
        return self._client.operation("POST", self._path, body=body)

    def delete(self, ref: str, *, cascade: bool = False) -> Operation:
        """Delete the pool; with ``cascade`` its volumes (none attached) are deleted first."""
        params = {"cascade": "true"} if cascade else None
        return self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}", params=params)

    def update(
        self,
        ref: str,
        *,
        state: str | None = None,
        overcommit: float | None = None,
        credentials: str | None = None,
    ) -> Operation:
        """Change the given fields (``None``: unchanged); ``credentials`` replaces the stored."""
        body = build(StoragePoolUpdate, state=state, overcommit=overcommit, credentials=credentials)
        return self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)

    def attach(self, ref: str, cluster: str) -> Operation:
        """Attach a cluster (id or name) to the pool."""
        body = build(PoolClusterAttach, cluster=cluster)
        return self._client.operation("POST", f"{self._path}/{quote_ref(ref)}/clusters", body=body)

    def detach(self, ref: str, cluster: str) -> Operation:
        """Detach a cluster (id or name) from the pool."""
        return self._client.operation(
            "DELETE", f"{self._path}/{quote_ref(ref)}/clusters/{quote_ref(cluster)}"
        )

    def hosts(self, ref: str) -> list[PoolHostReport]:
        """What each host of the attached clusters last reported of the pool (by host name):
        ``ok`` (else ``error``), ``total_gb``, ``free_gb``, ``updated_at``."""
        response = self._client.request("GET", f"{self._path}/{quote_ref(ref)}/hosts")
        try:
            return _HOST_REPORTS.validate_json(response.content)
        except ValidationError as exc:
            raise CorralError(
                f"the server answered with unexpected pool hosts: {exc.error_count()} errors"
            ) from exc
