"""Shared fixtures: a real PostgreSQL per session, database URLs for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support import postgres

# Deletes in the tests' stacks are immediate unless a test sets a policy (PUT
# /deletion-policies): the recycle bin has its own tests (tests/integration/test_recycle_sim.py).
os.environ.setdefault("CORRAL_DELETION_POLICY", "immediate")


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true", help="rewrite golden files")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[Any, Any, None]:
    """With CORRAL_NO_SKIP=1 (``make test``, CI) a skipped test fails: a missing libvirtd or test
    image must never pass silently."""
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("CORRAL_NO_SKIP") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped where skipping is not allowed (CORRAL_NO_SKIP=1): {report.longrepr}"
        )
