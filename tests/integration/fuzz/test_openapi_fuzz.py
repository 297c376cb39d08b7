"""Fuzz the whole OpenAPI of Corral with schemathesis: no 5xx, and every answer is documented
(status, content type, body schema: errors are ``ErrorResponse``).

The real server app with a simulator agent (``served.SIM_HOSTS`` hosts) runs in-process: requests
go to the ASGI app, no socket (only server and agent talk over loopback). The fuzzer is a
platform admin, so routes are exercised past authentication; ``served.prepare`` documents what
it changes in a case (throwaway tokens for one's own account routes, loopback URLs, a bounded
long poll, no admin password reset).

Bounded and reproducible: few examples per operation, derandomized generation, no example
database, a deadline per example and a request timeout; the stateful run is a few short
scenarios along the links schemathesis infers from the schema.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

from corral.api.common import MAX_ID
from corral.server.openapi import document
from tests.integration.fuzz.served import ServedCorral

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    unsupported_method,
    allow_header_conformance,
    missing_required_header,
    ignored_auth,
    use_after_free,
    ensure_resource_availability,
]
"""Every built-in check but two, left out because they judge what the schema cannot say:
- ``positive_data_acceptance`` (schema-valid data must get 2xx): random references name
  nothing (404), a random password is too weak and a random TOTP code wrong (422) — the
  server is right to refuse them.
- ``negative_data_rejection`` (schema-invalid data must get 4xx): pydantic's lax mode accepts
  ``0`` for a boolean and an epoch number for a date-time, and ``served.prepare`` replaces a
  fuzzed ``url`` (even an invalid one) by a valid loopback URL.
"""

EXAMPLES = int(os.environ.get("CORRAL_FUZZ_EXAMPLES", "4"))
"""Examples per operation (and stateful scenarios): 4 keeps the file near 30 s on 2 cores; raise
it for a deeper local run (``CORRAL_FUZZ_EXAMPLES=100``)."""

CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "request-timeout": 20,
        "phases": {"stateful": {"max-steps": 8}},
    }
)

pytestmark = pytest.mark.filterwarnings(
    # The agent's heartbeat loop (on the server's thread) draws its jitter from the global
    # `random`: Hypothesis sees the global state move while it draws a case and warns, wrongly.
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)

served = ServedCorral()
schema = schemathesis.openapi.from_dict(document(), config=CONFIG)
schema.app = served
statuses: Counter[int] = Counter()

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=10),
    suppress_health_check=list(hypothesis.HealthCheck),
    print_blob=False,
)


@pytest.fixture(scope="module", autouse=True)
def stack() -> Iterator[ServedCorral]:
    """The stack, started before the first case (on schemathesis's event loop) and stopped
    after the last; then the admin's session must still work."""
    with asgi.get_client(served) as client:
        assert client.get("/api/v1/health").status_code == 200
    try:
        yield served
        with asgi.get_client(served) as client:
            r = client.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {served.admin_token}"}
            )
            assert r.status_code == 200, r.text
    finally:
        served.close()


def _call(case: Case, **kwargs: Any) -> None:
    headers = served.prepare(case)
    response = case.call(headers=headers, **kwargs)
    statuses[response.status_code] += 1
    case.validate_response(response, checks=CHECKS, headers=headers)


@schema.parametrize()
@SETTINGS
def test_operation(case: Case) -> None:
    _call(case)


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls along the links schemathesis infers from the schema (e.g. a mutation,
    then ``GET``/``cancel`` of the Operation it answered with)."""

    def before_call(self, case: Case) -> None:
        self._headers = served.prepare(case)

    def get_call_kwargs(self, case: Case) -> dict[str, Any]:
        return {"headers": self._headers}

    def after_call(self, response: Any, case: Case) -> None:
        statuses[response.status_code] += 1
        stateful_steps.append(case.operation.label)

    def validate_response(self, response: Any, case: Case, **kwargs: Any) -> None:
        try:
            case.validate_response(response, checks=CHECKS, headers=self._headers)
        except Exception as exc:
            stateful_failures.append(f"{case.method} {case.formatted_path}: {exc}")
            raise


stateful_failures: list[str] = []
stateful_steps: list[str] = []


def test_stateful() -> None:
    """Short scenarios along inferred links. The server keeps its state from one scenario to
    the next (it is not reset), so Hypothesis may find that replaying a scenario draws
    differently and raise ``Flaky``: like schemathesis's own runner, that is not a failure;
    every check failure is recorded as it happens and fails the test."""
    settings = hypothesis.settings(
        SETTINGS, max_examples=EXAMPLES + 2, stateful_step_count=8, deadline=None
    )
    try:
        Workflow.run(settings=settings)
    except hypothesis.errors.Flaky:
        pass
    assert not stateful_failures, "\n\n".join(stateful_failures)
    assert len(stateful_steps) > EXAMPLES, stateful_steps


def _get(path: str, **kwargs: Any) -> Any:
    with asgi.get_client(served) as client:
        headers = {"Authorization": f"Bearer {served.admin_token}", **kwargs.pop("headers", {})}
        return client.request(kwargs.pop("method", "GET"), path, headers=headers, **kwargs)


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/audit-events/{MAX_ID + 1}",  # was a 500 (OverflowError binding the id)
        f"/api/v1/audit-events?offset={MAX_ID + 1}",  # was a 500 (same, as OFFSET)
    ],
)
def test_integers_beyond_the_database_are_invalid_input(path: str) -> None:
    r = _get(path)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"


def test_list_offset_beyond_the_database_is_invalid_input() -> None:
    assert _get(f"/api/v1/zones?offset={MAX_ID + 1}").status_code == 422


def test_wrong_method_answers_405_with_every_allowed_method() -> None:
    r = _get("/api/v1/zones", method="PUT")  # GET and POST are two routes of one path
    assert r.status_code == 405, r.text
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"GET", "POST"}


def test_unparsable_body_is_invalid_input() -> None:
    r = _get(
        "/api/v1/zones", method="POST", data=b"\xff", headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["code"] == "invalid_input"


def test_routes_were_exercised() -> None:
    """The fuzz got past authentication: most answers are not 401/403, some are 2xx."""
    total = sum(statuses.values())
    assert total > 100, statuses
    assert sum(n for code, n in statuses.items() if 200 <= code < 300) > 20, statuses
    assert statuses[401] + statuses[403] < total / 4, statuses
