"""The pure parts of a record: action names from routes, request summaries, client addresses."""

from __future__ import annotations

import json

import pytest
from fastapi.routing import APIRoute

from corral.server.app import create_app
from corral.server.http.audit_record import (
    SUMMARY_LIMIT,
    action_for,
    client_ip,
    singular,
    summarize,
)


@pytest.mark.parametrize(
    ("method", "template", "action"),
    [
        ("POST", "/vms", "vm.create"),
        ("DELETE", "/api/v1/vms/{ref}", "vm.delete"),
        ("PATCH", "/hosts/{ref}", "host.update"),
        ("POST", "/vms/{ref}/resize", "vm.resize"),
        ("POST", "/operations/{op_id}/cancel", "operation.cancel"),
        ("POST", "/auth/login", "auth.login"),
        ("POST", "/auth/totp/confirm", "auth.totp.confirm"),
        ("PUT", "/images/{ref}/data", "image.data.update"),
        ("POST", "/projects/{ref}/members", "project.member.create"),
        ("DELETE", "/projects/{ref}/members/{user}", "project.member.delete"),
        ("POST", "/access-keys", "access_key.create"),
        ("POST", "/policies", "policy.create"),
    ],
)
def test_action_names(method: str, template: str, action: str) -> None:
    assert action_for(method, template, "/ignored") == action


def test_unmatched_paths_are_named_from_the_path() -> None:
    assert action_for("POST", None, "/api/v1/vms/0123abcd/reboot") == "vm.reboot"
    assert action_for("DELETE", None, "/api/v1/things/9f") == "thing.delete"
    assert action_for("POST", None, "/api/v1/") == "api.create"


def test_singular() -> None:
    words = ["vms", "addresses", "access", "status", "policies", "data", "switches"]
    assert [singular(w) for w in words] == [
        "vm", "address", "access", "status", "policy", "data", "switch"]  # fmt: skip


def test_every_mutating_route_has_a_distinct_action() -> None:
    """Two routes may not share a name, or the log could not tell them apart."""
    seen: dict[str, tuple[str, str]] = {}
    for route in create_app().routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for ctx in contexts() if contexts else [route]:
            r = getattr(ctx, "original_route", ctx)
            if not isinstance(r, APIRoute) or "/agent/" in r.path:
                continue
            for method in (r.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}:
                name = action_for(method, r.path, r.path)
                assert seen.setdefault(name, (method, r.path)) == (method, r.path), name
    assert "vm.create" in seen and "auth.login" in seen


def test_summary_masks_secrets_and_keeps_the_rest() -> None:
    body = {"username": "bob", "password": "hunter2", "nested": [{"token": "t", "ok": 1}]}
    raw = json.dumps(body).encode()
    text, parsed = summarize(raw, len(raw), "application/json", b"project=p1&secret=s")
    assert parsed == body and text is not None and "hunter2" not in text
    assert json.loads(text) == {
        "query": {"project": "p1", "secret": "***"},
        "body": {"username": "bob", "password": "***", "nested": [{"token": "***", "ok": 1}]},
    }


def test_summary_of_bodies_it_cannot_keep() -> None:
    assert summarize(b"", 0, "", b"") == (None, None)
    text, _ = summarize(b"\x00" * 10, 10, "application/octet-stream", b"")
    assert json.loads(text or "") == {"content_type": "application/octet-stream", "size": 10}
    cut = b'{"password": "hunt'  # the first bytes of a bigger body: never stored
    text, parsed = summarize(cut, 70_000, "application/json", b"")
    assert parsed is None and json.loads(text or "") == {
        "content_type": "application/json", "size": 70_000}  # fmt: skip
    big = json.dumps({"items": ["x" * 100] * 100, "password": "p"}).encode()
    text, _ = summarize(big, len(big), "application/json", b"")
    assert text is not None and len(text) <= SUMMARY_LIMIT
    out = json.loads(text)
    assert out["truncated"] is True and out["size"] == len(big)
    assert out["excerpt"].startswith('{"body":{"items":["xxx')


def test_client_ip() -> None:
    scope = {"client": ("10.0.0.5", 1234), "headers": [(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2")]}
    assert client_ip(scope, trust_forwarded=False) == "10.0.0.5"
    assert client_ip(scope, trust_forwarded=True) == "2.2.2.2"
    assert client_ip({"headers": []}, trust_forwarded=True) is None
