"""Shared fixtures: a real PostgreSQL per session, database URLs for SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support import postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    if not postgres.available():
        pytest.fail("PostgreSQL binaries are missing: run scripts/setup")
    with postgres.postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return None
    base: str = request.getfixturevalue("pg_server")
    return await postgres.create_database(base, f"t_{uuid.uuid4().hex[:12]}")
