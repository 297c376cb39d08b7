"""ASGI middleware that records every state-changing API call (and every login) in the audit log.

Recorded: POST, PUT, PATCH and DELETE on ``/api/v1/*`` except the agent routes
(``/api/v1/agent/*``). One record per request, queued on the ``AuditWriter`` once the response is
sent (or the app raised: then status 500 ``internal``, or 499 ``cancelled`` if the server cancelled
it); the request never waits for the database.

What is captured: start and end time; method and path; the client address (``audit_record.
client_ip``: ``X-Forwarded-For`` only when the settings say the server is behind a trusted proxy);
the caller put on ``scope["state"]["caller"]`` by the auth dependencies (none for a login: the
user name is read from the login body); the action name (``audit_record.action_for``); the first
64 KB of the request body for the summary (secrets masked; the body reaches the app unchanged, the
middleware only copies it as it is read); the response status and, from a JSON response, the
error ``code``/``message`` or the operation ``id``, ``target_type`` and ``target_id``.

Target: the operation's target when it is of the route's kind (ids, not names), else the route's
last path parameter, else the ``id`` of a created resource; logins target the user (the writer
resolves the id). Project: the request's project (``Caller.project_id``), else the operation's
(resolved by the writer), else the caller's only project if they have exactly one.

A route may complete or correct the record by setting ``request.state.audit`` to a dict of columns
(``target_type``, ``target_id``, ``project_id``, ``actor_id``, ``actor_name``...).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from corral.server.db import tables_audit as cols
from corral.server.db.types import utcnow
from corral.server.http.audit_record import (
    API_PREFIX,
    action_for,
    client_ip,
    cut,
    noun_of,
    summarize,
)
from corral.server.identity.caller import Caller
from corral.server.services.audit import COLUMNS, LOGIN_ACTIONS, AuditWriter
from corral.server.services.context import Services
from corral.util.asgi import Asgi, Message, Receive, Scope, Send
from corral.util.redact import redact_text

log = logging.getLogger("corral.audit")


AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SKIPPED_PREFIX = API_PREFIX + "/agent/"
BODY_LIMIT = 64 * 1024
"""Bytes of request (and response) body kept for the record."""
_OVERRIDABLE = frozenset(COLUMNS) - {"started_at", "finished_at", "method", "path", "request"}


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return ""


def install(app: FastAPI) -> AuditWriter:
    """Add the middleware to ``app`` with a new writer, also put on ``app.state.audit`` (stop it
    with ``await app.state.audit.close()``). Both use ``app.state.services`` (its database; its
    settings' ``trusted_proxy``, False if absent), read at each request."""

    def services() -> Services | None:
        svc: Services | None = getattr(app.state, "services", None)
        return svc

    def engine() -> Any:
        svc = services()
        return svc.db if svc is not None else None

    def trust_forwarded() -> bool:
        svc = services()
        return svc.settings.trusted_proxy if svc is not None else False

    writer = AuditWriter(engine)
    app.state.audit = writer
    app.add_middleware(
        AuditCapture, writer=writer, services=services, trust_forwarded=trust_forwarded
    )
    return writer


class _Capture:
    """What one request and its response showed, gathered while they pass through."""

    __slots__ = ("body", "json_out", "out", "out_size", "size", "status")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.size = 0
        self.status = 0
        self.json_out = False
        self.out: list[bytes] = []
        self.out_size = 0


class AuditCapture:
    """The middleware (see the module docstring). ``services`` gives the server's services (None:
    not attached yet, nothing is recorded); ``trust_forwarded`` whether to believe
    ``X-Forwarded-For``."""

    def __init__(
        self,
        app: Asgi,
        *,
        writer: AuditWriter,
        services: Callable[[], Services | None],
        trust_forwarded: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.writer = writer
        self.services = services
        self.trust_forwarded = trust_forwarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in AUDITED_METHODS
            or not scope["path"].startswith(API_PREFIX + "/")
            or scope["path"].startswith(SKIPPED_PREFIX)
            or self.services() is None
        ):
            await self.app(scope, receive, send)
            return
        started = utcnow()
        cap = _Capture()
        keep_body = "json" in _header(scope, b"content-type")
        state = scope.setdefault("state", {})

        async def tee() -> Message:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                if keep_body and cap.size < BODY_LIMIT:
                    cap.body.append(chunk[: BODY_LIMIT - cap.size])
                cap.size += len(chunk)
            return message

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                cap.status = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"content-type":
                        cap.json_out = b"json" in value
            elif cap.json_out and cap.out_size < BODY_LIMIT:
                chunk = message.get("body", b"")
                cap.out.append(chunk[: BODY_LIMIT - cap.out_size])
                cap.out_size += len(chunk)
            await send(message)

        try:
            await self.app(scope, tee, watch)
        except BaseException as exc:
            error = None  # the response had started: record what was sent
            if cap.status == 0:
                cap.out, cap.json_out = [], False
                if isinstance(exc, asyncio.CancelledError):  # server shutting down
                    cap.status, error = 499, ("cancelled", "cancelled before the response")
                else:
                    cap.status, error = 500, ("internal", f"internal error: {type(exc).__name__}")
            self._enqueue(scope, state, cap, started, error)
            raise
        self._enqueue(scope, state, cap, started, None)

    def _enqueue(
        self,
        scope: Scope,
        state: dict[str, Any],
        cap: _Capture,
        started: Any,
        error: tuple[str, str] | None,
    ) -> None:
        try:
            rec = self._build(scope, state, cap, started, error)
        except Exception:  # a record must never break a request
            log.exception("audit: cannot build a record for %s %s", scope["method"], scope["path"])
            return
        self.writer.record(rec)

    def _build(
        self,
        scope: Scope,
        state: dict[str, Any],
        cap: _Capture,
        started: Any,
        error: tuple[str, str] | None,
    ) -> dict[str, Any]:
        method, path = scope["method"], scope["path"]
        route = scope.get("route")
        action = action_for(method, getattr(route, "path", None), path)
        noun = noun_of(action)
        summary, body = summarize(
            b"".join(cap.body),
            cap.size,
            _header(scope, b"content-type"),
            scope.get("query_string", b""),
        )
        out = _response_json(cap)
        err = out.get("error") if isinstance(out.get("error"), dict) else None
        is_op = {"id", "type", "status", "progress"} <= out.keys() and err is None
        rec: dict[str, Any] = dict.fromkeys(COLUMNS)
        rec.update(
            started_at=started,
            method=method,
            path=cut(path, cols.PATH_LEN),
            action=cut(action, cols.ACTION_LEN),
            client_ip=cut(client_ip(scope, trust_forwarded=self.trust_forwarded()), cols.IP_LEN),
            status_code=cap.status,
            result="success" if 0 < cap.status < 400 else "failure",
            request=summary,
            target_type=noun,
        )
        if error is not None:
            rec["error_code"], rec["error_message"] = error
        elif err is not None:
            rec["error_code"] = cut(err.get("code"), cols.CODE_LEN)
            message = err.get("message")
            if message is not None:
                rec["error_message"] = cut(redact_text(str(message)), cols.MESSAGE_LEN)
        elif cap.status >= 400:
            rec["error_code"] = f"http_{cap.status}"
        params: dict[str, Any] = scope.get("path_params") or {}
        if is_op:
            rec["operation_id"] = cut(out["id"], cols.ID_LEN)
        if is_op and out.get("target_type") == noun and out.get("target_id"):
            rec["target_id"] = out["target_id"]
        elif params:
            rec["target_id"] = list(params.values())[-1]
        elif method == "POST" and not is_op and cap.status < 300 and out.get("id"):
            rec["target_id"] = out["id"]
        caller = state.get("caller")
        if isinstance(caller, Caller):
            rec.update(
                actor_id=caller.user_id,
                actor_name=caller.username,
                auth_method=caller.method,
                project_id=caller.project_id,
            )
            if caller.project_id is None and not is_op and len(caller.roles) == 1:
                rec["project_id"] = next(iter(caller.roles))
        elif action in LOGIN_ACTIONS:
            rec["target_type"], rec["target_id"] = "user", None
            rec["auth_method"] = "password"
            if isinstance(body, dict) and isinstance(body.get("username"), str):
                rec["actor_name"] = body["username"]
        else:
            rec["auth_method"] = "none"
        extra = state.get("audit")
        if isinstance(extra, dict):
            rec.update({k: v for k, v in extra.items() if k in _OVERRIDABLE})
        for key, limit in (("actor_name", cols.NAME_LEN), ("target_id", cols.NAME_LEN),
                           ("target_type", cols.CODE_LEN), ("actor_id", cols.ID_LEN),
                           ("project_id", cols.ID_LEN), ("auth_method", 16)):  # fmt: skip
            rec[key] = cut(rec[key], limit)
        rec["finished_at"] = utcnow()
        return rec


def _response_json(cap: _Capture) -> dict[str, Any]:
    if not cap.json_out or not cap.out or cap.out_size > BODY_LIMIT:
        return {}
    try:
        out = json.loads(b"".join(cap.out))
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}
