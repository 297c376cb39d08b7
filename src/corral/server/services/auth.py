"""Accounts and sessions: login (password, lockout back-off, per-client rate limit, TOTP second
factor or recovery code), logout, password change, TOTP enrolment; session tokens.

Login contract (``login``):
- a client IP making more attempts than ``Services.login_limiter`` allows gets
  ``RateLimited`` (429, Retry-After) before anything is checked;
- an account after ``LockoutPolicy.threshold`` consecutive failures is refused with
  ``RateLimited`` until its back-off ends, without checking (or counting) the password;
- a wrong user name or password is ``Unauthenticated`` (the same message for both; an unknown
  user costs a dummy argon2 verification so that timing does not tell);
- a right password on an account with two-factor auth and no ``otp`` is ``OtpRequired``; a wrong
  code counts as a failure; a recovery code works once;
- success resets the failure count and returns a bearer token valid ``token_ttl_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from datetime import timedelta

from sqlalchemy import delete, select

from corral.api.auth import RecoveryCodes, Token, TotpEnrolment
from corral.api.errors import (
    InvalidInput,
    InvalidState,
    OtpRequired,
    RateLimited,
    Unauthenticated,
)
from corral.server.db.tables import TokenRow, UserRow
from corral.server.db.types import utcnow
from corral.server.security import passwords, totp
from corral.server.security.lockout import LockoutPolicy
from corral.server.services.context import Services

LOCKOUT = LockoutPolicy()
SESSION_CACHE_S = 10.0
"""How long a checked token is trusted without reading the database again."""


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _totp_context(user_id: str) -> str:
    return f"user:{user_id}:totp"


async def ensure_admin(*, svc: Services) -> str | None:
    """Create the ``admin`` account at first start. Returns the generated password (shown once),
    or None if an admin exists already."""
    async with svc.sessionmaker.begin() as s:
        if await s.scalar(select(UserRow.id).where(UserRow.name == "admin")) is not None:
            return None
        password = svc.settings.admin_password or passwords.generate_password()
        pw_hash = await asyncio.to_thread(passwords.hash_password, password)
        s.add(UserRow(name="admin", password_hash=pw_hash, is_admin=True,
                      password_changed_at=utcnow()))  # fmt: skip
        return password


def _rate_limit(svc: Services, client_ip: str | None) -> None:
    wait = svc.login_limiter.hit(f"login:{client_ip or '?'}")
    if wait > 0:
        raise RateLimited("too many login attempts from this address; retry later",
                          retry_after_s=wait)  # fmt: skip


async def login(
    *, svc: Services, username: str, password: str, otp: str | None = None,
    client_ip: str | None = None,
) -> Token:  # fmt: skip
    """See the module docstring."""
    _rate_limit(svc, client_ip)
    now = utcnow()
    async with svc.sessionmaker() as s:
        user = await s.scalar(select(UserRow).where(UserRow.name == username))
    if user is None or not user.enabled:
        await asyncio.to_thread(passwords.dummy_verify, password)
        raise Unauthenticated("wrong user name or password")
    wait = LOCKOUT.retry_after_s(user.failed_logins, user.last_failed_at, now=now)
    if wait > 0:
        raise RateLimited(
            "too many failed logins for this account; retry later", retry_after_s=wait
        )
    ok, new_hash = await asyncio.to_thread(passwords.verify_and_update, user.password_hash,
                                           password)  # fmt: skip
    if not ok:
        await _failed(svc, user.id)
        raise Unauthenticated("wrong user name or password")
    step: int | None = None
    used_recovery: int | None = None
    if user.totp_enabled:
        if not otp:
            raise OtpRequired("this account uses two-factor authentication: send the code (otp)")
        step, used_recovery = _check_second_factor(svc, user, otp)
        if step is None and used_recovery is None:
            await _failed(svc, user.id)
            raise Unauthenticated("wrong two-factor code")
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=svc.settings.token_ttl_s)
    async with svc.sessionmaker.begin() as s:
        row = await s.get(UserRow, user.id)
        if row is None:
            raise Unauthenticated("wrong user name or password")
        row.failed_logins, row.last_failed_at = 0, None
        if new_hash is not None:
            row.password_hash = new_hash
        if step is not None:
            if row.totp_last_step is not None and step <= row.totp_last_step:
                raise Unauthenticated("this two-factor code was used already")
            row.totp_last_step = step
        if used_recovery is not None:
            codes = list(row.recovery_codes or [])
            if used_recovery >= len(codes) or codes[used_recovery] is None:
                raise Unauthenticated("this recovery code was used already")
            codes[used_recovery] = None
            row.recovery_codes = codes
        s.add(TokenRow(id=_token_id(token), user_id=user.id, expires_at=expires))
        await s.execute(delete(TokenRow).where(TokenRow.expires_at < now))
    return Token(token=token, expires_at=expires, username=user.name)


def _check_second_factor(svc: Services, user: UserRow, code: str) -> tuple[int | None, int | None]:
    """(TOTP step, recovery code index): which one ``code`` matched (both None: neither)."""
    if user.totp_secret is None:
        return None, None
    secret = svc.secrets.open(user.totp_secret, _totp_context(user.id))
    step = totp.verify(secret, code, last_used_step=user.totp_last_step)
    if step is not None:
        return step, None
    return None, totp.match_recovery_code(code, list(user.recovery_codes or []), salt=user.id)


async def _failed(svc: Services, user_id: str) -> None:
    async with svc.sessionmaker.begin() as s:
        row = await s.get(UserRow, user_id)
        if row is not None:
            row.failed_logins += 1
            row.last_failed_at = utcnow()


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


async def logout(*, svc: Services, token: str) -> None:
    """End the session of ``token`` (at once in this process; other nodes within
    ``SESSION_CACHE_S``)."""
    tid = _token_id(token)
    svc.sessions.pop(tid, None)
    async with svc.sessionmaker.begin() as s:
        await s.execute(delete(TokenRow).where(TokenRow.id == tid))


async def _user(svc: Services, user_id: str) -> UserRow:
    async with svc.sessionmaker() as s:
        user = await s.get(UserRow, user_id)
    if user is None:
        raise Unauthenticated("this account was removed")
    return user


async def change_password(
    *, svc: Services, user_id: str, current: str, new: str, keep_token: str | None = None
) -> None:
    """Check ``current``, check ``new``'s strength, store it and end every other session."""
    user = await _user(svc, user_id)
    if not await asyncio.to_thread(passwords.verify_password, user.password_hash, current):
        raise Unauthenticated("the current password is wrong")
    passwords.check_strength(new, username=user.name)
    new_hash = await asyncio.to_thread(passwords.hash_password, new)
    keep = _token_id(keep_token) if keep_token else None
    async with svc.sessionmaker.begin() as s:
        row = await s.get(UserRow, user_id)
        if row is None:
            raise Unauthenticated("this account was removed")
        row.password_hash, row.password_changed_at = new_hash, utcnow()
        await s.execute(delete(TokenRow).where(TokenRow.user_id == user_id, TokenRow.id != keep))
    svc.sessions.clear()


async def totp_begin(*, svc: Services, user_id: str) -> TotpEnrolment:
    """A new TOTP secret for the account (not active until ``totp_confirm``)."""
    user = await _user(svc, user_id)
    if user.totp_enabled:
        raise InvalidState("two-factor authentication is on already; disable it first")
    secret = totp.new_secret()
    async with svc.sessionmaker.begin() as s:
        row = await s.get(UserRow, user_id)
        assert row is not None
        row.totp_secret = svc.secrets.seal(secret, _totp_context(user_id))
        row.totp_last_step = None
    uri = totp.provisioning_uri(secret, user.name)
    return TotpEnrolment(secret=secret, otpauth_uri=uri, qr_svg=totp.qr_svg(uri))


async def totp_confirm(*, svc: Services, user_id: str, code: str) -> RecoveryCodes:
    """Turn two-factor auth on once ``code`` proves the authenticator has the secret; returns
    the recovery codes (shown once)."""
    user = await _user(svc, user_id)
    if user.totp_enabled or user.totp_secret is None:
        raise InvalidState("start the enrolment first (POST /auth/totp)")
    secret = svc.secrets.open(user.totp_secret, _totp_context(user_id))
    step = totp.verify(secret, code, last_used_step=None)
    if step is None:
        raise InvalidInput("wrong code: check the authenticator's clock", field="code")
    codes = totp.new_recovery_codes()
    async with svc.sessionmaker.begin() as s:
        row = await s.get(UserRow, user_id)
        assert row is not None
        row.totp_enabled, row.totp_last_step = True, step
        row.recovery_codes = [totp.hash_recovery_code(c, salt=user_id) for c in codes]
    return RecoveryCodes(recovery_codes=codes)


async def totp_disable(*, svc: Services, user_id: str, password: str, code: str) -> None:
    """Turn two-factor auth off (password and a current code or recovery code)."""
    user = await _user(svc, user_id)
    if not user.totp_enabled:
        raise InvalidState("two-factor authentication is off")
    if not await asyncio.to_thread(passwords.verify_password, user.password_hash, password):
        raise Unauthenticated("the password is wrong")
    step, recovery = _check_second_factor(svc, user, code)
    if step is None and recovery is None:
        raise Unauthenticated("wrong two-factor code")
    async with svc.sessionmaker.begin() as s:
        row = await s.get(UserRow, user_id)
        assert row is not None
        row.totp_enabled, row.totp_secret, row.recovery_codes = False, None, None
        row.totp_last_step = None
