"""Shapes shared by every resource: identifiers, pages and list queries."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

T = TypeVar("T")

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
]
"""A resource name: 1-63 characters, letters, digits, ``_ . -``, starting with a letter or digit."""

Ref = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""A reference to another resource by id or by name."""

TAG_PATTERN = r"^[\w.:/=+@-]{1,128}$"
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=TAG_PATTERN)]
"""A tag: 1-128 letters, digits and ``_ . : / = + @ -`` (``env=prod``, ``team:web``); no spaces
or commas, so a tag can always be written unquoted in a query."""
MAX_TAGS = 50
"""Most user tags on one resource."""


class Model(BaseModel):
    """Base of every contract model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


def etag_of(resource_id: str, updated_at: datetime) -> str:
    """The entity tag of a resource version: it changes whenever ``updated_at`` does."""
    digest = hashlib.sha256(f"{resource_id}\0{updated_at.isoformat()}".encode()).hexdigest()
    return f'"{digest[:20]}"'


class Resource(Model):
    """Fields every first-class resource has. ``etag`` identifies this version (also sent as the
    ``ETag`` header of a GET); send it back in ``If-Match`` to change the resource only if nobody
    changed it since (else ``412 precondition_failed``)."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime

    etag: str = Field("", description="this version's entity tag (computed by the server)")
    tags: list[str] = Field(
        default_factory=list,
        description="user tags (add: POST .../{id}/tags, remove: DELETE .../{id}/tags?tag=)",
    )
    system_tags: list[str] = Field(
        default_factory=list, description="tags Corral itself sets and reads; not changeable"
    )

    @model_validator(mode="after")
    def _compute_etag(self) -> Self:
        if not self.etag:
            self.etag = etag_of(self.id, self.updated_at)
        return self


class OwnedResource(Resource):
    """A resource of a project: ``owner_id`` created it; ``shared``: every member of the project
    sees it (not only its owner and the project's admins)."""

    project_id: str | None = Field(None, description="the project (None: a public image)")
    owner_id: str | None = None
    shared: bool = False


class TagsChange(Model):
    """Tags to add to a resource (existing ones are kept; adding one twice is not an error)."""

    tags: list[Tag] = Field(min_length=1, max_length=MAX_TAGS)


class Page(Model, Generic[T]):
    """One page of a list endpoint. ``total`` counts every match of the filter, not just this page."""

    items: list[T]
    total: int
    limit: int
    offset: int


MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_ID = 2**63 - 1
"""The largest offset or integer id a request may name: the databases' 64-bit INTEGER (a larger
one cannot match anything, and the drivers refuse to bind it)."""
