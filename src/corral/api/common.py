"""Shapes shared by every resource: identifiers, pages and list queries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
]
"""A resource name: 1-63 characters, letters, digits, ``_ . -``, starting with a letter or digit."""

Ref = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""A reference to another resource by id or by name."""


class Model(BaseModel):
    """Base of every contract model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Resource(Model):
    """Fields every first-class resource has."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime


class Page(Model, Generic[T]):
    """One page of a list endpoint. ``total`` counts every match of the filter, not just this page."""

    items: list[T]
    total: int
    limit: int
    offset: int


MAX_PAGE = 1000
DEFAULT_PAGE = 100


class ListQuery(Model):
    """Paging, sorting and filtering accepted by every list endpoint.

    ``sort`` is a field name, ``-field`` for descending. Filters are ``field=value`` query parameters
    validated per resource.
    """

    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0)
    sort: str = "created_at"
