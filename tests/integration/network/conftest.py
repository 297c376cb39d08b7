"""Fixtures of the network tests: a private Open vSwitch "host" and an agent data directory."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ovs import NsOvs, ns_host


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """The agent's data directory; searchable by dnsmasq's user (pytest's are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="corral-plane-test-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[NsOvs]:
    with ns_host(tmp_path / "ovs", f"cpl-{uuid.uuid4().hex[:6]}") as h:
        h.sh("ip", "link", "add", "up0", "type", "veth", "peer", "name", "up0p")
        h.sh("ip", "link", "set", "up0p", "up")
        yield h
