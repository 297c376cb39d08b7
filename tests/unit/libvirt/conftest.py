"""Fixtures of the libvirt driver's unit tests: golden files and the in-process test driver."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"

Golden = Callable[[str, str], None]


def _regenerate(config: pytest.Config) -> bool:
    """``CORRAL_REGENERATE_GOLDEN=1``, or ``--regenerate-golden`` when the top-level conftest
    declares that option (pytest only honours ``pytest_addoption`` in initial conftests)."""
    if os.environ.get("CORRAL_REGENERATE_GOLDEN") == "1":
        return True
    try:
        return bool(config.getoption("--regenerate-golden"))
    except ValueError:
        return False


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    """``golden(name, text)``: assert ``text`` equals ``golden/<name>``, or rewrite the file
    when regenerating."""
    regenerate = _regenerate(request.config)

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if regenerate:
            path.write_text(text)
            return
        assert path.exists(), f"{path} is missing: run with CORRAL_REGENERATE_GOLDEN=1"
        assert text == path.read_text(), f"{name} differs from the golden file"

    return check
