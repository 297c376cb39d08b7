"""Resource accessors (``client.zones``, ``client.hosts`` ...): list, get, create, delete."""

# Generated from corral/sdk/_async/resources.py by corral.sdk._unasync: do not edit.

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from corral.api.common import DEFAULT_PAGE, Page, TagsChange
from corral.api.hosts import Host, HostCreate, HostUpdate
from corral.api.offerings import Offering, OfferingCreate
from corral.api.operations import Operation as OperationModel
from corral.api.zones import Cluster, ClusterCreate, ClusterUpdate, Zone, ZoneCreate
from corral.sdk._base import (
    build,
    parse,
    parse_page,
    query,
    quote_ref,
)
from corral.sdk._sync.operation import Operation, OperationCallback

if TYPE_CHECKING:
    from corral.sdk._sync.client import Client

R = TypeVar("R", bound=BaseModel)

Filter = str | int | bool | None


Tags = str | Sequence[str] | None
Items = list[dict[str, Any]]
"""Items with only the selected fields."""


class Listing(Generic[R]):
    """A list endpoint (``GET /<collection>``) with the server's Query API: ``q`` conditions
    (``"state=running,memory>=1024,host.cluster.name=c1"``), ``sort`` (``"-memory,name"``),
    ``tag`` filters, paging, ``field=value`` filters, field selection and counts. A query the
    server cannot run raises ``InvalidQuery`` naming the field."""

    def __init__(self, client: Client, path: str, model: type[R]) -> None:
        self._client = client
        self._path = path
        self._model = model

    def list(
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
        response = self._client.request("GET", self._path, params=params)
        return parse_page(self._model, response.content)

    def iter(
        self,
        *,
        page_size: int = DEFAULT_PAGE,
        sort: str | None = None,
        q: str | None = None,
        tag: Tags = None,
        **filters: Filter,
    ) -> Iterator[R]:
        """Every match, fetching page after page."""
        offset = 0
        while True:
            page = self.list(limit=page_size, offset=offset, sort=sort, q=q, tag=tag, **filters)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def count(self, *, q: str | None = None, tag: Tags = None, **filters: Filter) -> int:
        """How many items match (no items are fetched)."""
        params = query(filters, limit=1, offset=0, sort=None, q=q, tag=tag, count=True)
        response = self._client.request("GET", self._path, params=params)
        return int(json.loads(response.content)["total"])

    def select(
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
        response = self._client.request("GET", self._path, params=params)
        items: Items = json.loads(response.content)["items"]
        return items


class Collection(Listing[R]):
    """A collection of named resources: list, get by id or name, delete, tag."""

    def get(self, ref: str) -> R:
        """The resource with this id or name; ``NotFound`` if none."""
        response = self._client.request("GET", f"{self._path}/{quote_ref(ref)}")
        return parse(self._model, response.content)

    def delete(self, ref: str) -> Operation:
        """Start deleting the resource."""
        return self._client.operation("DELETE", f"{self._path}/{quote_ref(ref)}")

    def tag(self, ref: str, *tags: str) -> Operation:
        """Add user tags to the resource (present ones are kept)."""
        body = build(TagsChange, tags=list(tags))
        return self._client.operation("POST", f"{self._path}/{quote_ref(ref)}/tags", body=body)

    def untag(self, ref: str, *tags: str) -> Operation:
        """Remove user tags from the resource (absent ones are ignored)."""
        return self._client.operation(
            "DELETE", f"{self._path}/{quote_ref(ref)}/tags", params={"tag": list(tags)}
        )


class Zones(Collection[Zone]):
    """``client.zones``: data centers."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/zones", Zone)

    def create(self, name: str, *, description: str = "") -> Operation:
        body = build(ZoneCreate, name=name, description=description)
        return self._client.operation("POST", self._path, body=body)


class Clusters(Collection[Cluster]):
    """``client.clusters``: groups of alike hosts in a zone."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/clusters", Cluster)

    def create(
        self,
        name: str,
        *,
        zone: str,
        description: str = "",
        cpu_overcommit: float = 4.0,
        memory_overcommit: float = 1.0,
    ) -> Operation:
        body = build(
            ClusterCreate,
            name=name,
            zone=zone,
            description=description,
            cpu_overcommit=cpu_overcommit,
            memory_overcommit=memory_overcommit,
        )
        return self._client.operation("POST", self._path, body=body)

    def update(
        self,
        ref: str,
        *,
        description: str | None = None,
        cpu_overcommit: float | None = None,
        memory_overcommit: float | None = None,
    ) -> Operation:
        """Change the given fields (``None``: unchanged)."""
        body = build(
            ClusterUpdate,
            description=description,
            cpu_overcommit=cpu_overcommit,
            memory_overcommit=memory_overcommit,
        )
        return self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class Hosts(Collection[Host]):
    """``client.hosts``: servers running a Corral agent."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/hosts", Host)

    def create(
        self, url: str, cluster: str, name: str | None = None, *, fingerprint: str | None = None
    ) -> Operation:
        """Add the host whose agent listens at ``url`` to ``cluster`` (id or name); with
        ``fingerprint`` (SHA-256 of the agent's bootstrap certificate, as the agent logs it)
        enrollment stops if the agent presents another certificate."""
        body = build(HostCreate, url=url, cluster=cluster, name=name, cert_fingerprint=fingerprint)
        return self._client.operation("POST", self._path, body=body)

    def add(
        self, url: str, cluster: str, name: str | None = None, *, fingerprint: str | None = None
    ) -> Operation:
        """Same as ``create``."""
        return self.create(url, cluster, name, fingerprint=fingerprint)

    def update(self, ref: str, *, enabled: bool | None = None) -> Operation:
        """Enable or disable scheduling on the host."""
        body = build(HostUpdate, enabled=enabled)
        return self._client.operation("PATCH", f"{self._path}/{quote_ref(ref)}", body=body)


class Offerings(Collection[Offering]):
    """``client.offerings``: CPU/memory/disk presets."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/offerings", Offering)

    def create(self, name: str, *, cpus: int, memory_mb: int, disk_gb: int) -> Operation:
        body = build(OfferingCreate, name=name, cpus=cpus, memory_mb=memory_mb, disk_gb=disk_gb)
        return self._client.operation("POST", self._path, body=body)


class Operations(Listing[OperationModel]):
    """``client.operations``: list (filters ``status=``, ``target_id=``), follow and cancel."""

    def __init__(self, client: Client) -> None:
        super().__init__(client, "/operations", OperationModel)

    def get(self, operation_id: str) -> Operation:
        """A handle on the operation (``NotFound`` if unknown)."""
        response = self._client.request("GET", f"{self._path}/{quote_ref(operation_id)}")
        return Operation(self._client, parse(OperationModel, response.content))

    def wait(
        self,
        operation_id: str,
        timeout: float | None = None,
        on_progress: OperationCallback | None = None,
    ) -> Operation:
        """``get(operation_id).wait(timeout, on_progress)``."""
        op = self.get(operation_id)
        return op.wait(timeout, on_progress)

    def cancel(self, operation_id: str) -> Operation:
        """Cancel a queued operation (``NotCancellable`` if it is running or done)."""
        response = self._client.request("POST", f"{self._path}/{quote_ref(operation_id)}/cancel")
        return Operation(self._client, parse(OperationModel, response.content))
