"""Fixtures for the agent's unit tests: fake drivers and a host runtime on a temp data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent.runtime import HostRuntime
from tests.unit.agent.fakes import FakeCompute, FakeVolumes


@pytest.fixture
def compute() -> FakeCompute:
    return FakeCompute()


@pytest.fixture
def volumes(tmp_path: Path) -> FakeVolumes:
    return FakeVolumes(tmp_path / "pool")


@pytest.fixture
async def runtime(
    tmp_path: Path, compute: FakeCompute, volumes: FakeVolumes
) -> AsyncIterator[HostRuntime]:
    rt = HostRuntime(
        name="test",
        data_dir=tmp_path / "agent",
        compute=compute,
        volumes=volumes,
        fault_injection=True,
        inline_wait=0.2,
        shutdown_grace=1.0,
    )
    await rt.start()
    yield rt
    await rt.stop()
