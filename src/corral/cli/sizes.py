"""Parse sizes the way people type them: ``512M``, ``10G``, ``1.5GiB``, ``2T``; units are binary."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str, *, default_unit: str) -> int:
    """Bytes in ``text``; a bare number is in ``default_unit`` (``M`` or ``G``). K/M/G/T are
    powers of 1024 (``1G`` = ``1GiB`` = ``1GB``). Raises ``ValueError`` on anything else."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 512M, 10G, 1.5GiB)")
    number, unit = match.groups()
    if not unit and not text.strip().upper().endswith("B"):
        unit = default_unit
    return int(float(number) * _UNITS[unit.upper()])


def parse_gib(text: str) -> int:
    """A disk size in whole GiB, rounded up (``512M`` → 1, ``10G`` → 10, bare ``20`` → 20)."""
    size = parse_bytes(text, default_unit="G")
    if size <= 0:
        raise ValueError(f"{text!r}: the size must be positive")
    return math.ceil(size / 1024**3)


def parse_mib(text: str) -> int:
    """A memory size in whole MiB, rounded up (``2G`` → 2048, bare ``512`` → 512)."""
    size = parse_bytes(text, default_unit="M")
    if size <= 0:
        raise ValueError(f"{text!r}: the size must be positive")
    return math.ceil(size / 1024**2)


def _usage_error(parse: Callable[[str], int], text: str) -> int:
    import typer

    try:
        return parse(text)
    except ValueError as exc:  # Typer would print it as "Value error, ..."
        raise typer.BadParameter(str(exc)) from exc


def gib_option(text: str) -> int:
    """``parse_gib`` for a Typer option (``parser=``): a bad size is a usage error."""
    return _usage_error(parse_gib, text)


def mib_option(text: str) -> int:
    """``parse_mib`` for a Typer option (``parser=``): a bad size is a usage error."""
    return _usage_error(parse_mib, text)
