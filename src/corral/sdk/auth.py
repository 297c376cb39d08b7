"""httpx authentication for the SDK: a bearer token, or an AccessKey that signs every request.

Both classes need no I/O in their flow, so one instance works with ``httpx.Client`` and
``httpx.AsyncClient`` alike (pass it as ``auth=``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime

import httpx

from corral.api.signing import signed_headers


class BearerAuth(httpx.Auth):
    """Sends ``Authorization: Bearer <token>`` (a token from ``/auth/login``)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token=***)"


class AccessKeyAuth(httpx.Auth):
    """Signs each request with an AccessKey (``corral.api.signing``, CORRAL-HMAC-SHA256).

    The signature covers method, path, query, body hash, date and a fresh nonce. A body given as
    bytes (JSON calls) is hashed; a streamed body (file uploads) is sent as UNSIGNED-PAYLOAD rather
    than read into memory, and the server accepts that only on its streaming routes. ``clock`` gives
    the signing time (tests); the server refuses dates more than 5 minutes off its own clock.
    """

    def __init__(
        self, key_id: str, secret: str, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.key_id = key_id
        self._secret = secret
        self._clock = clock or (lambda: datetime.now(UTC))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            body: bytes | None = request.content
        except httpx.RequestNotRead:  # a streamed body: not hashed (would need it twice)
            body = None
        raw_path, _, _ = request.url.raw_path.partition(b"?")
        headers = signed_headers(
            self.key_id,
            self._secret,
            request.method,
            raw_path.decode("ascii"),
            request.url.query.decode("ascii"),
            body,
            now=self._clock(),
        )
        request.headers.update(headers)
        yield request

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self.key_id!r}, secret=***)"
