"""Fixtures of the secrets tests: every log record of the test, at DEBUG, the way an operator's
log file would get it; and the scan for secrets in a text."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.util.redact import uninstall_log_redaction


class LogFile:
    """Where the records went (``text`` reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[LogFile]:
    """Every record at DEBUG and above, from any logger, into a file with the CLI's format.

    Redaction is uninstalled first: whatever scrubs the records must be installed by the code under
    test (the server's and agent's start-up), not by an earlier test."""
    uninstall_log_redaction()
    path = tmp_path / "logs" / "all.log"
    path.parent.mkdir()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield LogFile(path)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        uninstall_log_redaction()


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """The labels of the ``secrets`` whose value appears in ``text``."""
    return [label for label, value in secrets.items() if value and value in text]
