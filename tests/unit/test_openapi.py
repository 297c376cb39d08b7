"""The committed OpenAPI document matches the code (run `make gen` after changing the API)."""

from __future__ import annotations

from pathlib import Path

from corral.server.openapi import render

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_is_current() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == render(), "docs/openapi.json drifted: run `make gen`"


def test_every_mutation_answers_202_with_an_operation() -> None:
    import json

    doc = json.loads(render())
    for path, methods in doc["paths"].items():
        for method, spec in methods.items():
            if method in ("post", "put", "patch", "delete"):
                if path.endswith("/cancel") or path.startswith(
                    ("/api/v1/auth/", "/api/v1/access-keys")
                ):
                    continue  # cancelling an operation; one's own session and account
                assert "202" in spec["responses"], f"{method.upper()} {path} must answer 202"
