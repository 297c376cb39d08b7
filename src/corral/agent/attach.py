"""Which server owns this agent: the attachment file, its TLS identity and bearer-token checks.

An agent starts unclaimed. Enrollment (``begin_enrollment`` then ``complete_enrollment``, with the
same one-time token, within ``ENROLL_TTL_S``) or a plain ``POST /v1/attach`` claims it, and the
attachment (host id, token, server URL, pinned server certificate) is persisted in
``<data>/attach.json`` (mode 0600). Enrollment also leaves the host's TLS identity in
``<data>/identity/`` (``host.key``, ``host.crt``, ``ca.crt``, mode 0600). Once claimed, attaching
or enrolling again needs the current token, either as the bearer or as the request's own token
(an idempotent retry). ``forget`` (the server removed the host) makes the agent unclaimed again.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field, ValidationError

from corral.agent.files import write_private
from corral.api.agent import AttachRequest, EnrollComplete, EnrollRequest
from corral.api.common import Model
from corral.api.errors import StorageError, Unauthenticated
from corral.util.ca import check_issued, issued_host_id, new_key_and_csr

ENROLL_TTL_S = 600.0
"""How long an enrollment started by ``begin_enrollment`` can be completed."""


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


@dataclass(frozen=True)
class HostIdentity:
    """The files of an enrolled host's TLS identity (issued by the cluster CA)."""

    host_id: str
    cert_path: Path
    key_path: Path
    ca_path: Path


IdentityListener = Callable[[str, HostIdentity | None], None]
"""Told ``(host_id, identity)`` when an identity is installed, ``(host_id, None)`` when dropped."""


@dataclass(frozen=True)
class _Pending:
    request: EnrollRequest
    token_digest: bytes
    key_pem: str
    expires_at: float


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AttachStore:
    """The attachment of one host agent, loaded from and saved to ``path``; its TLS identity in
    ``identity/`` next to it. ``on_identity`` (set by the listener's owner) hears of changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: Attachment | None = None
        self.identity_dir = path.parent / "identity"
        self.identity: HostIdentity | None = None
        self.on_identity: IdentityListener | None = None
        self._pending: _Pending | None = None

    def load(self) -> Attachment | None:
        """Read the attachment file and identity if present. A corrupt file raises
        ``StorageError``; an identity for another host than the attachment's is ignored."""
        self.identity = None
        if not self.path.exists():
            self.current = None
            return None
        try:
            self.current = Attachment.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise StorageError("cannot read the attachment file", path=str(self.path)) from exc
        ident = self._identity_for(self.current.host_id)
        try:
            if issued_host_id(ident.cert_path.read_text()) == ident.host_id:
                self.identity = ident
        except OSError:
            pass  # not enrolled (plain attach)
        return self.current

    def _identity_for(self, host_id: str) -> HostIdentity:
        d = self.identity_dir
        return HostIdentity(host_id, d / "host.crt", d / "host.key", d / "ca.crt")

    def _check_claim(self, host_id: str, token: str, authorization: str | None) -> None:
        """May a request for ``host_id`` with ``token`` (re)claim this agent? ``Unauthenticated``
        unless it is unclaimed, or the caller holds the current token (bearer or same request)."""
        current = self.current
        if current is None:
            return
        bearer = bearer_token(authorization)
        if (bearer is not None and same_secret(bearer, current.token)) or (
            same_secret(token, current.token) and host_id == current.host_id
        ):
            return
        raise Unauthenticated("agent is already attached; the current token is required")

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
        self._check_claim(request.host_id, request.token, authorization)
        if self.identity is not None and self.identity.host_id != request.host_id:
            self._drop_identity()
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

    def begin_enrollment(self, request: EnrollRequest, *, authorization: str | None) -> str:
        """Step 1: make a new key and return a CSR for it (PEM). The enrollment stays pending
        (in memory, ``ENROLL_TTL_S``) until ``complete_enrollment`` with the same token; a new
        call replaces it. A claimed agent needs its current token as the bearer."""
        current = self.current
        bearer = bearer_token(authorization)
        if current is not None and (bearer is None or not same_secret(bearer, current.token)):
            raise Unauthenticated("agent is already attached; the current token is required")
        key_pem, csr_pem = new_key_and_csr(request.host_id)
        self._pending = _Pending(
            request, _digest(request.enrollment_token), key_pem, time.monotonic() + ENROLL_TTL_S
        )
        return csr_pem

    def complete_enrollment(
        self, body: EnrollComplete, *, authorization: str | None
    ) -> AttachRequest:
        """Step 2: check and install the certificate for the pending key (see ``check_issued``),
        and return the attach request to ``claim`` with. The enrollment token works once:
        ``Unauthenticated`` for an unknown, used or expired one; ``InvalidInput`` for a bad
        certificate (the enrollment stays pending)."""
        pending = self._pending
        if pending is None or not hmac.compare_digest(
            _digest(body.enrollment_token), pending.token_digest
        ):
            raise Unauthenticated("unknown or already used enrollment token; enroll again")
        if time.monotonic() > pending.expires_at:
            self._pending = None
            raise Unauthenticated("the enrollment token expired; enroll again")
        req = pending.request
        check_issued(
            body.cert_pem, ca_pem=body.ca_pem, key_pem=pending.key_pem, host_id=req.host_id
        )
        self._check_claim(req.host_id, body.host_token, authorization)
        self._pending = None
        ident = self._identity_for(req.host_id)
        self.identity_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(ident.key_path, pending.key_pem.encode())
        write_private(ident.cert_path, body.cert_pem.encode())
        write_private(ident.ca_path, body.ca_pem.encode())
        self.identity = ident
        if self.on_identity is not None:
            self.on_identity(ident.host_id, ident)
        return AttachRequest(
            host_id=req.host_id,
            token=body.host_token,
            server_url=req.server_url,
            server_cert_pem=req.server_cert_pem,
        )

    def forget(self) -> None:
        """Forget the attachment, then the TLS identity (files too): the agent is unclaimed.
        ``StorageError`` if a file cannot be removed (a left-over identity without attachment
        is ignored by ``load`` and replaced by the next enrollment)."""
        self._pending = None
        _unlink(self.path)
        self.current = None
        self._drop_identity()

    def _drop_identity(self) -> None:
        ident, self.identity = self.identity, None
        if ident is not None and self.on_identity is not None:
            self.on_identity(ident.host_id, None)
        for name in ("host.crt", "host.key", "ca.crt"):
            _unlink(self.identity_dir / name)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError("cannot remove file", path=str(path), reason=exc.strerror) from exc
