"""Size parsing, ``-o`` anywhere, error printing, and a CLI that starts without heavy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corral.api.errors import CorralError, ErrorBody, NoHostAvailable
from corral.cli.app import hoist_output_option
from corral.cli.output import human_bytes, print_error
from corral.cli.sizes import parse_gib, parse_mib


@pytest.mark.parametrize(
    ("text", "gib"),
    [("10G", 10), ("10", 10), ("512M", 1), ("1.5GiB", 2), ("1T", 1024), ("2gb", 2), ("1025M", 2)],
)
def test_disk_sizes_round_up_to_whole_gib(text: str, gib: int) -> None:
    assert parse_gib(text) == gib


@pytest.mark.parametrize(
    ("text", "mib"), [("512", 512), ("2G", 2048), ("1.5G", 1536), ("1000K", 1)]
)
def test_memory_sizes_in_mib(text: str, mib: int) -> None:
    assert parse_mib(text) == mib


@pytest.mark.parametrize("text", ["", "ten", "10Q", "-1G", "0", "1.2.3G"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_gib(text)


def test_output_option_is_hoisted_to_the_root() -> None:
    assert hoist_output_option(["vm", "list", "-o", "json", "--limit", "5"]) == [
        "-o",
        "json",
        "vm",
        "list",
        "--limit",
        "5",
    ]
    assert hoist_output_option(["vm", "list", "--output=json"]) == ["--output=json", "vm", "list"]
    assert hoist_output_option(["vm", "create", "--", "-o", "x"]) == [
        "vm",
        "create",
        "--",
        "-o",
        "x",
    ]


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
    ]


def test_error_printing_handles_both_shapes_of_host_reasons(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hosts = [{"name": "h1", "reasons": ["disabled"]}, {"host": "h2", "reason": "full"}]
    print_error(NoHostAvailable("no host", hosts=hosts, vm="v1"))
    assert capsys.readouterr().err.splitlines() == [
        "Error [no_host_available]: no host",
        "Hosts:",
        "  h1: disabled",
        "  h2: full",
        "  vm: v1",
    ]
    print_error(CorralError.from_body(ErrorBody(code="quota_exceeded", message="m", context={})))
    assert capsys.readouterr().err == "Error [quota_exceeded]: m\n"


def test_the_cli_starts_without_loading_the_sdk() -> None:
    code = (
        "import sys, corral.cli.app; "
        "print(sorted(m for m in ('httpx', 'pydantic', 'rich', 'corral.sdk') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
