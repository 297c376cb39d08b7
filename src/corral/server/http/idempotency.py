"""``Idempotency-Key`` on every mutating call (POST, PUT, PATCH, DELETE under /api/v1).

Contract, per user and key (keys are scoped to the authenticated user, kept ``TTL``):
- first request: runs; its answer (status, JSON body, Location) is stored unless it is a 5xx
  (a server failure may be retried for real);
- the same key with the same request (method, path, query, body) again: the stored answer,
  replayed (``Idempotent-Replayed: true``) — also after a server restart;
- the same key with a different request: ``409 idempotency_key_reused``, nothing runs;
- while the first request still runs: ``409 idempotency_in_progress`` with Retry-After.
Crash safety: a mutating call that creates an operation records the key on the operation, in the
transaction of its change (``operations.IDEMPOTENCY_KEY``, read by ``OperationRunner.create``). If the server dies
before the answer was stored, the retry finds that operation and answers with it (never runs the
change twice); if nothing was committed, the retry runs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import Headers

from corral.api.errors import Conflict, CorralError, ErrorBody, ErrorResponse
from corral.api.signing import is_signed
from corral.server.db.tables import IdempotencyRow, OperationRow
from corral.server.db.types import utcnow
from corral.server.http import signed
from corral.server.services import auth
from corral.server.services.context import Services
from corral.server.services.operations import IDEMPOTENCY_KEY as CURRENT_KEY
from corral.server.services.operations import to_model
from corral.util.asgi import Asgi, Message, Receive, Scope, Send, bearer, header, send_json

HEADER = b"idempotency-key"
TTL = timedelta(hours=24)
MAX_KEY = 255
BOOT = secrets.token_hex(8)
"""This process: an in-progress record of another process was cut short by a restart."""


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class IdempotencyInProgress(Conflict):
    code = "idempotency_in_progress"


class Idempotency:
    """ASGI middleware implementing the module's contract."""

    def __init__(self, app: Asgi, services: Callable[[], Services | None]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = header(scope, HEADER) if scope["type"] == "http" else None
        svc = self.services() if key else None
        if (
            key is None
            or svc is None
            or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE")
            or not scope["path"].startswith("/api/v1/")
            or scope["path"].startswith("/api/v1/agent/")
        ):
            await self.app(scope, receive, send)
            return
        if len(key) > MAX_KEY:
            await _error(send, 422, "invalid_input", f"Idempotency-Key is longer than {MAX_KEY}")
            return
        body, receive = await _buffer(receive)
        try:
            user_id = await self._user(svc, scope, body)
        except CorralError:
            await self.app(scope, receive, send)  # the app answers 401 itself
            return
        digest = hashlib.sha256(
            b"\0".join(
                [
                    scope["method"].encode(),
                    scope["path"].encode(),
                    scope.get("query_string", b""),
                    body,
                ]
            )
        ).hexdigest()
        record_id = hashlib.sha256(f"{user_id}\0{key}".encode()).hexdigest()
        try:
            stored = await self._claim(svc, record_id, user_id, digest)
        except CorralError as exc:
            await _error(send, exc.http_status, exc.code, exc.message, retry=exc.http_status == 409)
            return
        if stored is not None:
            await _replay(send, stored)
            return
        await self._run(svc, scope, receive, send, record_id)

    async def _user(self, svc: Services, scope: Scope, body: bytes) -> str:
        """The user of a bearer token or of a valid AccessKey signature (checked here, once:
        ``signed.verify`` leaves the result for the app); ``CorralError`` otherwise."""
        if is_signed(Headers(scope=scope)):
            user_id, _ = await signed.verify(
                svc, scope, body if signed.body_is_signed(scope) else None
            )
            return user_id
        token = bearer(scope)
        if token is None:
            raise CorralError("not a bearer token")
        return await auth.check_token(svc=svc, token=token)

    async def _claim(
        self, svc: Services, record_id: str, user_id: str, digest: str
    ) -> dict[str, Any] | None:
        """None: this request runs (the record is ours); else the stored answer to replay."""
        for _ in range(2):
            async with svc.sessionmaker.begin() as s:
                row = await s.get(IdempotencyRow, record_id)
                if row is not None and row.created_at < utcnow() - TTL:
                    await s.delete(row)
                    await s.flush()
                    row = None
                if row is None:
                    s.add(IdempotencyRow(id=record_id, user_id=user_id, request_hash=digest,
                                         headers={"_boot": BOOT}))  # fmt: skip
                    try:
                        await s.flush()
                    except IntegrityError:
                        await s.rollback()
                        continue  # another request took the key just now: look again
                    return None
                if row.request_hash != digest:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used for a different request"
                    )
                if row.status_code is not None:
                    return {"status": row.status_code, "body": row.response,
                            "headers": row.headers or {}}  # fmt: skip
                op = await s.scalar(select(OperationRow).where(
                    OperationRow.idempotency_key == record_id))  # fmt: skip
                if op is not None:  # committed, but the answer was never stored (crash)
                    op_body = to_model(op).model_dump(mode="json")
                    location = {"location": f"/api/v1/operations/{op.id}"}
                    row.status_code, row.response, row.headers = 202, op_body, location
                    return {"status": 202, "body": op_body, "headers": location}
                if (row.headers or {}).get("_boot") != BOOT:
                    await s.delete(row)  # cut short by a restart before anything committed
                    await s.flush()
                    continue
                raise IdempotencyInProgress("a request with this Idempotency-Key is still running")
        raise IdempotencyInProgress("a request with this Idempotency-Key is still running")

    async def _run(
        self, svc: Services, scope: Scope, receive: Receive, send: Send, record_id: str
    ) -> None:
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        token = CURRENT_KEY.set(record_id)
        try:
            await self.app(scope, receive, capture)
        finally:
            CURRENT_KEY.reset(token)
            await self._store(svc, record_id, status, headers, b"".join(chunks))

    async def _store(
        self, svc: Services, record_id: str, status: int, headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:  # fmt: skip
        async with svc.sessionmaker.begin() as s:
            row = await s.get(IdempotencyRow, record_id)
            if row is None:
                return
            if status >= 500:
                await s.delete(row)
                return
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                payload = None
            kept = {k.decode(): v.decode("latin-1") for k, v in headers
                    if k.lower() in (b"location", b"etag")}  # fmt: skip
            row.status_code = status
            row.response = payload if isinstance(payload, dict) else {"_list": payload}
            row.headers = kept
            await s.execute(
                delete(IdempotencyRow).where(IdempotencyRow.created_at < utcnow() - TTL)
            )


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that replays it to the app."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _replay(send: Send, stored: dict[str, Any]) -> None:
    body = stored["body"]
    if isinstance(body, dict) and "_list" in body:
        body = body["_list"]
    raw = b"" if body is None else json.dumps(body).encode()
    headers = [(b"idempotent-replayed", b"true")]
    headers += [(k.encode(), str(v).encode()) for k, v in stored["headers"].items()
                if not k.startswith("_")]  # fmt: skip
    await send_json(send, stored["status"], raw, headers)


async def _error(send: Send, status: int, code: str, message: str, *, retry: bool = False) -> None:
    raw = ErrorResponse(error=ErrorBody(code=code, message=message)).model_dump_json().encode()
    in_progress = retry and code == "idempotency_in_progress"
    await send_json(send, status, raw, [(b"retry-after", b"1")] if in_progress else [])
