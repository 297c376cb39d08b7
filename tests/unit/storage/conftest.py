"""Fixtures for the directory pool's unit tests: a pool in tmp_path and an in-memory image source."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.storage.dirpool import DirPool
from tests.unit.storage.fakes import MemoryFetcher


@pytest.fixture
def pool(tmp_path: Path) -> DirPool:
    return DirPool(tmp_path / "pool")


@pytest.fixture
def fetcher() -> MemoryFetcher:
    return MemoryFetcher()
