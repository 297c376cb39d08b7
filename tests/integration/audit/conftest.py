"""Fixtures of the audit log tests: running stacks and a helper to read their audit records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.up import Stack
from tests.support.stack import running_stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A stack on SQLite (its database file is ``tmp_path / "corral.db"``)."""
    async with running_stack(tmp_path) as s:
        yield s


@pytest.fixture
async def any_stack(tmp_path: Path, database_url: str | None) -> AsyncIterator[Stack]:
    """A stack on SQLite, then on PostgreSQL."""
    async with running_stack(tmp_path, database_url=database_url) as s:
        yield s


async def events(c: httpx.AsyncClient, stack: Stack, q: str = "") -> list[dict[str, Any]]:
    """Every record ``q`` selects, oldest first, once everything queued is written."""
    assert await stack.server.app.state.audit.flush()
    r = await c.get("/audit-events", params={"q": q, "sort": "id", "limit": 1000})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items
