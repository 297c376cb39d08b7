"""Accounts and session tokens (minimal: one admin; full RBAC comes later)."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import delete, select

from corral.api.auth import Token
from corral.api.errors import Unauthenticated
from corral.server.db.tables import TokenRow, UserRow
from corral.server.db.types import utcnow
from corral.server.services.context import Services

_hasher = PasswordHasher()


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def ensure_admin(*, svc: Services) -> str | None:
    """Create the ``admin`` account at first start. Returns the generated password (shown once),
    or None if an admin exists already."""
    async with svc.sessionmaker.begin() as s:
        if await s.scalar(select(UserRow.id).where(UserRow.name == "admin")) is not None:
            return None
        password = svc.settings.admin_password or secrets.token_urlsafe(15)
        s.add(UserRow(name="admin", password_hash=_hasher.hash(password), is_admin=True))
        return password


async def login(*, svc: Services, username: str, password: str) -> Token:
    async with svc.sessionmaker.begin() as s:
        user = await s.scalar(select(UserRow).where(UserRow.name == username))
        try:
            if user is None:
                raise VerificationError("no such user")
            _hasher.verify(user.password_hash, password)
        except VerificationError as exc:
            raise Unauthenticated("wrong user name or password") from exc
        token = secrets.token_urlsafe(32)
        expires = utcnow() + timedelta(seconds=svc.settings.token_ttl_s)
        s.add(TokenRow(id=_token_id(token), user_id=user.id, expires_at=expires))
        await s.execute(delete(TokenRow).where(TokenRow.expires_at < utcnow()))
        return Token(token=token, expires_at=expires, username=user.name)


SESSION_CACHE_S = 10.0
"""How long a checked token is trusted without reading the database again."""


async def check_token(*, svc: Services, token: str) -> str:
    """The user id the token belongs to; ``Unauthenticated`` if unknown or expired."""
    tid = _token_id(token)
    hit = svc.sessions.get(tid)
    now = time.monotonic()
    if hit is not None and hit[2] > now and hit[1] >= utcnow():
        return hit[0]
    async with svc.sessionmaker() as s:
        row = await s.get(TokenRow, tid)
    if row is None or row.expires_at < utcnow():
        svc.sessions.pop(tid, None)
        raise Unauthenticated("the token is invalid or expired; log in again")
    if len(svc.sessions) > 100_000:
        svc.sessions.clear()
    svc.sessions[tid] = (row.user_id, row.expires_at, now + SESSION_CACHE_S)
    return row.user_id
