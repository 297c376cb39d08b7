"""Pure helpers of ``corral accesskey`` / ``corral audit`` and of ``client.audit``: times given
on the command line, and the ``q`` text built from options and keywords."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer

from corral.api.audit import AuditExportFormat, AuditResult
from corral.api.errors import InvalidInput
from corral.cli.accesskey import parse_when
from corral.cli.audit import Result, query_of
from corral.sdk._sync.audit import export_format, query_text, quoted


def test_parse_when_takes_iso_dates_and_durations() -> None:
    assert parse_when("2025-01-31T12:00:00+02:00", future=True) == datetime(
        2025, 1, 31, 10, tzinfo=UTC
    )
    assert parse_when("2025-01-31", future=False) == datetime(2025, 1, 31, tzinfo=UTC)  # naive: UTC
    before = datetime.now(UTC)
    ahead = parse_when("90d", future=True)
    ago = parse_when("2h", future=False)
    after = datetime.now(UTC)
    assert before + timedelta(days=90) <= ahead <= after + timedelta(days=90)
    assert before - timedelta(hours=2) <= ago <= after - timedelta(hours=2)
    for bad in ("soon", "3 days", "-1d", ""):
        with pytest.raises(typer.BadParameter):
            parse_when(bad, future=True)


def test_query_text_quotes_values_and_skips_none() -> None:
    assert quoted('a,b|"c"\\') == '"a,b|\\"c\\"\\\\"'
    assert query_text("", {}) == ""
    assert query_text(" status>=400 ", {"action": "vm.create", "actor_name": None}) == (
        'status>=400,action="vm.create"'
    )
    assert query_text("", {"result": AuditResult.failure, "status_code": 409}) == (
        'result="failure",status_code="409"'
    )


def test_cli_options_become_conditions() -> None:
    assert query_of("", None, None, None) == ""
    assert query_of("method=POST", "vm.*", "ann", Result.failure) == (
        'method=POST,action~"vm.*",actor_name="ann",result="failure"'
    )


def test_export_format() -> None:
    assert export_format("json") is AuditExportFormat.json
    with pytest.raises(InvalidInput) as bad:
        export_format("xml")
    assert bad.value.context["field"] == "format"
