"""Resource accessors (``client.zones``, ``client.hosts`` ...): list, get, create, delete."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from corral.api.common import DEFAULT_PAGE, Page, TagsChange
from corral.api.hosts import Host, HostCreate, HostUpdate
from corral.api.offerings import Offering, OfferingCreate
from corral.api.operations import Operation as OperationModel
from corral.api.zones import Cluster, ClusterCreate, ClusterUpdate, Zone, ZoneCreate
from corral.sdk._async.operation import AsyncOperation, OperationCallback
from corral.sdk._base import (
    build,
    parse,
    parse_page,
    query,
    quote_ref,
)

if TYPE_CHECKING:
    from corral.sdk._async.client import AsyncClient

R = TypeVar("R", bound=BaseModel)

Filter = str | int | bool | None


Tags = str | Sequence[str] | None
Items = list[dict[str, Any]]
"""Items with only the selected fields."""


class AsyncListing(Generic[R]):
    """A list endpoint (``GET /<collection>``) with the server's Query API: ``q`` conditions
    (``"state=running,memory>=1024,host.cluster.name=c1"``), ``sort`` (``"-memory,name"``),
    ``tag`` filters, paging, ``field=value`` filters, field selection and counts. A query the
    server cannot run raises ``InvalidQuery`` naming the field."""

    def __init__(self, client: AsyncClient, path: str, model: type[R]) -> None:
        self._client = client
        self._path = path
        self._model = model

    async def list(
        self,
        *,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        sort: str | None = None,
        q: str | None = None,
        tag: Tags = None,
        **filters: Filter,
    ) -> Page[R]:
        """One page. ``sort``: fields, ``-field`` descending; ``tag``: carrying every one of
        these tags; filters are ``field=value`` (e.g. ``status="running"``; ``None``: ignored)."""
        params = query(filters, limit=limit, offset=offset, sort=sort, q=q, tag=tag)
        response = await self._client.request("GET", self._path, params=params)
        return parse_page(self._model, response.content)

    async def iter(
        self,
        *,
        page_size: int = DEFAULT_PAGE,
        sort: str | None = None,
        q: str | None = None,
        tag: Tags = None,
        **filters: Filter,
    ) -> AsyncIterator[R]:
        """Every match, fetching page after page."""
        offset = 0
        while True:
            page = await self.list(
                limit=page_size, offset=offset, sort=sort, q=q, tag=tag, **filters
            )
            for item in page.items:
                yield item
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def count(self, *, q: str | None = None, tag: Tags = None, **filters: Filter) -> int:
        """How many items match (no items are fetched)."""
        params = query(filters, limit=1, offset=0, sort=None, q=q, tag=tag, count=True)
        response = await self._client.request("GET", self._path, params=params)
        return int(json.loads(response.content)["total"])

    async def select(
        self,
        fields: Sequence[str],
        *,
        limit: int = DEFAULT_PAGE,
        offset: int = 0,
        sort: str | None = None,
        q: str | None = None,
        tag: Tags = None,
        **filters: Filter,
    ) -> Items:
        """One page of only these ``fields`` of each item, as dicts; related fields nest
        (``"host.name"`` -> ``{"host": {"name": ...}}``)."""
        params = query(filters, limit=limit, offset=offset, sort=sort, q=q, tag=tag, fields=fields)
        response = await self._client.request("GET", self._path, params=params)
        items: Items = json.loads(response.content)["items"]
        return items


class AsyncCollection(AsyncListing[R]):
    """A collection of named resources: list, get by id or name, delete, tag."""

    async def get(self, ref: str) -> R:
        """The resource with this id or name; ``NotFound`` if none."""
        response = await self._client.request("GET", f"{self._path}/{quote_ref(ref)}")
        return parse(self._model, response.content)

    async def delete(self, ref: str) -> AsyncOperation:
        """Start deleting the resource."""
        return await self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}")

    async def tag(self, ref: str, *tags: str) -> AsyncOperation:
        """Add user tags to the resource (present ones are kept)."""
        body = build(TagsChange, tags=list(tags))
        return await self._client.operation(
            "POST", f"{self._path}/{quote_ref(ref)}/tags", body=body
        )

    async def untag(self, ref: str, *tags: str) -> AsyncOperation:
        """Remove user tags from the resource (absent ones are ignored)."""
        return await self._client.operation(
            "DELETE", f"{self._path}/{quote_ref(ref)}/tags", params={"tag": list(tags)}
        )


class AsyncZones(AsyncCollection[Zone]):
    """``client.zones``: data centers."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/zones", Zone)

    async def create(self, name: str, *, description: str = "") -> AsyncOperation:
        body = build(ZoneCreate, name=name, description=description)
        return await self._client.operation("POST", self._path, body=body)


class AsyncClusters(AsyncCollection[Cluster]):
    """``client.clusters``: groups of alike hosts in a zone."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/clusters", Cluster)

    async def create(
        self,
        name: str,
        *,
        zone: str,
        description: str = "",
        cpu_overcommit: float = 4.0,
        memory_overcommit: float = 1.0,
    ) -> AsyncOperation:
        body = build(
            ClusterCreate,
            name=name,
            zone=zone,
            description=description,
            cpu_overcommit=cpu_overcommit,
            memory_overcommit=memory_overcommit,
        )
        return await self._client.operation("POST", self._path, body=body)

    async def update(
        self,
        ref: str,
        *,
        description: str | None = None,
        cpu_overcommit: float | None = None,
        memory_overcommit: float | None = None,
    ) -> AsyncOperation:
        """Change the given fields (``None``: unchanged)."""
        body = build(
            ClusterUpdate,
            description=description,
            cpu_overcommit=cpu_overcommit,
            memory_overcommit=memory_overcommit,
        )
        return await self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class AsyncHosts(AsyncCollection[Host]):
    """``client.hosts``: servers running a Corral agent."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/hosts", Host)

    async def create(
        self, url: str, cluster: str, name: str | None = None, *, fingerprint: str | None = None
    ) -> AsyncOperation:
        """Add the host whose agent listens at ``url`` to ``cluster`` (id or name); with
        ``fingerprint`` (SHA-256 of the agent's bootstrap certificate, as the agent logs it)
        enrollment stops if the agent presents another certificate."""
        body = build(HostCreate, url=url, cluster=cluster, name=name, cert_fingerprint=fingerprint)
        return await self._client.operation("POST", self._path, body=body)

    async def add(
        self, url: str, cluster: str, name: str | None = None, *, fingerprint: str | None = None
    ) -> AsyncOperation:
        """Same as ``create``."""
        return await self.create(url, cluster, name, fingerprint=fingerprint)

    async def update(self, ref: str, *, enabled: bool | None = None) -> AsyncOperation:
        """Enable or disable scheduling on the host."""
        body = build(HostUpdate, enabled=enabled)
        return await self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class AsyncOfferings(AsyncCollection[Offering]):
    """``client.offerings``: CPU/memory/disk presets."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/offerings", Offering)

    async def create(self, name: str, *, cpus: int, memory_mb: int, disk_gb: int) -> AsyncOperation:
        body = build(OfferingCreate, name=name, cpus=cpus, memory_mb=memory_mb, disk_gb=disk_gb)
        return await self._client.operation("POST", self._path, body=body)


class AsyncOperations(AsyncListing[OperationModel]):
    """``client.operations``: list (filters ``status=``, ``target_id=``), follow and cancel."""

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client, "/operations", OperationModel)

    async def get(self, operation_id: str) -> AsyncOperation:
        """A handle on the operation (``NotFound`` if unknown)."""
        response = await self._client.request("GET", f"{self._path}/{quote_ref(operation_id)}")
        return AsyncOperation(self._client, parse(OperationModel, response.content))

    async def wait(
        self,
        operation_id: str,
        timeout: float | None = None,
        on_progress: OperationCallback | None = None,
    ) -> AsyncOperation:
        """``get(operation_id).wait(timeout, on_progress)``."""
        op = await self.get(operation_id)
        return await op.wait(timeout, on_progress)

    async def cancel(self, operation_id: str) -> AsyncOperation:
        """Cancel a queued operation (``NotCancellable`` if it is running or done)."""
        response = await self._client.request(
            "POST", f"{self._path}/{quote_ref(operation_id)}/cancel"
        )
        return AsyncOperation(self._client, parse(OperationModel, response.content))
