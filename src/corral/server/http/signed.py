"""Checking an AccessKey-signed request from its ASGI scope, once per request.

The idempotency middleware checks the signature before the app runs (it must know the user to
scope the key); the replay guard refuses a signature seen twice, so the result is left in the
scope's state (``STATE_KEY``) and the caller dependency takes it from there instead of checking
again."""

from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import Headers

from corral.api.signing import CONTENT_HEADER, UNSIGNED_PAYLOAD
from corral.server.services import access_keys
from corral.server.services.context import Services

Scope = MutableMapping[str, Any]
"""An ASGI scope (the middleware's dict or a Starlette request's)."""

STATE_KEY = "corral.signed"
"""``scope["state"][STATE_KEY]``: (user id, AccessKey id) of a request whose signature was
checked."""


def streaming(scope: Scope) -> bool:
    """A streaming upload (``PUT …/data``): its body may be left unsigned."""
    return bool(scope["method"] == "PUT" and scope["path"].endswith("/data"))


def body_is_signed(scope: Scope) -> bool:
    """Whether the signature covers the body (not ``UNSIGNED-PAYLOAD`` on a streaming upload)."""
    return not streaming(scope) or Headers(scope=scope).get(CONTENT_HEADER, "") != UNSIGNED_PAYLOAD


def checked(scope: Scope) -> tuple[str, str] | None:
    """The result of an earlier check of this request, if any."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, tuple) else None


async def verify(svc: Services, scope: Scope, body: bytes | None) -> tuple[str, str]:
    """(user id, AccessKey id) of the signed request ``scope`` with ``body`` (None: unsigned
    streaming upload), remembered in the scope's state; ``Unauthenticated`` otherwise."""
    raw_path: bytes | None = scope.get("raw_path")
    result = await access_keys.check_signed(
        svc=svc,
        guard=svc.replay_guard,
        headers=Headers(scope=scope),
        method=scope["method"],
        path=raw_path.decode("latin-1") if raw_path else scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        body=body,
        allow_unsigned_payload=streaming(scope),
    )
    scope.setdefault("state", {})[STATE_KEY] = result
    return result
