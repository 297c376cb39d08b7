"""Which server owns this agent: the attachment file and bearer-token checks.

An agent starts unclaimed. The first ``POST /v1/attach`` claims it and the attachment (host id,
token, server URL, pinned server certificate) is persisted in ``<data>/attach.json`` (mode 0600).
Once claimed, attaching again (token rotation, new server URL) needs the current token, either as
the bearer or as the request's own token (an idempotent retry of the same attach).
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, ValidationError

from corral.agent.files import write_private
from corral.api.agent import AttachRequest
from corral.api.common import Model
from corral.api.errors import StorageError, Unauthenticated


class Attachment(Model):
    """The persisted claim of a server on this agent."""

    host_id: str
    token: str
    server_url: str
    server_cert_pem: str | None = None
    attached_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(a.encode(), b.encode())


class AttachStore:
    """The attachment of one host agent, loaded from and saved to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: Attachment | None = None

    def load(self) -> Attachment | None:
        """Read the attachment file if present. A corrupt file raises ``StorageError``."""
        if not self.path.exists():
            self.current = None
            return None
        try:
            self.current = Attachment.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise StorageError("cannot read the attachment file", path=str(self.path)) from exc
        return self.current

    def authenticate(self, authorization: str | None) -> Attachment:
        """Check a request's bearer against the current token; ``Unauthenticated`` otherwise
        (also when the agent is not attached)."""
        current = self.current
        token = bearer_token(authorization)
        if current is None:
            raise Unauthenticated("agent is not attached to a server")
        if token is None or not same_secret(token, current.token):
            raise Unauthenticated("invalid or missing bearer token")
        return current

    def claim(self, request: AttachRequest, *, authorization: str | None) -> Attachment:
        """Accept ``request`` if the agent is unclaimed or the caller proves it knows the current
        token; persist it and return the new attachment."""
        current = self.current
        if current is not None:
            token = bearer_token(authorization)
            allowed = (token is not None and same_secret(token, current.token)) or (
                same_secret(request.token, current.token) and request.host_id == current.host_id
            )
            if not allowed:
                raise Unauthenticated("agent is already attached; the current token is required")
        attachment = Attachment(
            host_id=request.host_id,
            token=request.token,
            server_url=request.server_url.rstrip("/"),
            server_cert_pem=request.server_cert_pem,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.path, attachment.model_dump_json(indent=2).encode())
        self.current = attachment
        return attachment
