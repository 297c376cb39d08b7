"""AccessKeys: created for the calling user (secret shown once, sealed at rest: the server needs
it to check signatures), listed, disabled, deleted; and the check of a signed request."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from corral.api.auth import AccessKey, AccessKeyCreate, AccessKeyCreated, AccessKeyUpdate
from corral.api.common import Page
from corral.api.errors import NotFound, Unauthenticated
from corral.api.signing import ReplayGuard, new_access_key, parse_signed_headers, verify
from corral.server.db.tables import AccessKeyRow
from corral.server.db.types import utcnow
from corral.server.identity.caller import Caller
from corral.server.query import specs
from corral.server.services.context import Services
from corral.server.services.listing import ListRequest, page_of, plan, query_rows

MAX_KEYS_PER_USER = 20
KEY_CACHE_S = 10.0
"""How long a checked key (and its unsealed secret) is reused; disabling or deleting a key
through this process drops it at once, other server nodes notice within this time."""


class KeyCache:
    """Checked keys with their unsealed secrets (``KEY_CACHE_S``, at most ``max_entries``).

    ``invalidate`` drops a key and bumps ``epoch``: a lookup that read the database before an
    invalidation does not put what it read in the cache (``put`` with the epoch read before the
    lookup), so a key disabled while a request was looking it up is not cached enabled.
    """

    def __init__(self, ttl_s: float = KEY_CACHE_S, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.epoch = 0
        self._entries: dict[str, tuple[float, AccessKeyRow, str]] = {}

    def get(self, key_id: str) -> tuple[AccessKeyRow, str] | None:
        hit = self._entries.get(key_id)
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1], hit[2]

    def put(self, row: AccessKeyRow, secret: str, epoch: int) -> None:
        if epoch != self.epoch:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[row.id] = (time.monotonic() + self.ttl_s, row, secret)

    def invalidate(self, key_id: str) -> None:
        self.epoch += 1
        self._entries.pop(key_id, None)


_CACHE = KeyCache()


def _context(key_id: str) -> str:
    return f"access_key:{key_id}:secret"


def _model(r: AccessKeyRow) -> AccessKey:
    return AccessKey(id=r.id, user_id=r.user_id, description=r.description, enabled=r.enabled,
                     created_at=r.created_at, last_used_at=r.last_used_at,
                     expires_at=r.expires_at)  # fmt: skip


def _mine(caller: Caller) -> ColumnElement[bool]:
    return true() if caller.is_platform_admin else AccessKeyRow.user_id == caller.user_id


async def create(*, svc: Services, caller: Caller, spec: AccessKeyCreate) -> AccessKeyCreated:
    from corral.api.errors import InvalidInput

    async with svc.sessionmaker.begin() as s:
        n = len(list(await s.scalars(
            select(AccessKeyRow.id).where(AccessKeyRow.user_id == caller.user_id))))  # fmt: skip
        if n >= MAX_KEYS_PER_USER:
            raise InvalidInput(f"at most {MAX_KEYS_PER_USER} AccessKeys per user", field="keys")
        key_id, secret = new_access_key()
        row = AccessKeyRow(id=key_id, user_id=caller.user_id, description=spec.description,
                           secret=svc.secrets.seal(secret, _context(key_id)),
                           expires_at=spec.expires_at, created_at=utcnow())  # fmt: skip
        s.add(row)
        await s.flush()
        return AccessKeyCreated(**_model(row).model_dump(), secret=secret)


async def list_keys(*, svc: Services, caller: Caller, req: ListRequest) -> Page[Any]:
    """The caller's keys (platform admins: everyone's), through the Query API over
    ``specs.ACCESS_KEYS`` (oldest first by default); never their secrets."""
    p = plan(specs.ACCESS_KEYS, AccessKey, req)
    async with svc.sessionmaker() as s:
        rows, total = await query_rows(s, specs.ACCESS_KEYS, p, req, [_mine(caller)])
    return page_of([_model(r[0]) for r in rows], rows, total, p, req)


async def _own(s: AsyncSession, caller: Caller, key_id: str) -> AccessKeyRow:
    row = await s.get(AccessKeyRow, key_id)
    if row is None or (row.user_id != caller.user_id and not caller.is_platform_admin):
        raise NotFound(f"AccessKey {key_id!r} not found", kind="access_key", ref=key_id)
    return row


async def update(*, svc: Services, caller: Caller, key_id: str, spec: AccessKeyUpdate) -> AccessKey:
    _CACHE.invalidate(key_id)
    try:
        async with svc.sessionmaker.begin() as s:
            row = await _own(s, caller, key_id)
            if spec.enabled is not None:
                row.enabled = spec.enabled
            if spec.description is not None:
                row.description = spec.description
            model = _model(row)
    finally:  # a lookup that ran during the transaction may have cached the old row
        _CACHE.invalidate(key_id)
    return model


async def delete(*, svc: Services, caller: Caller, key_id: str) -> None:
    _CACHE.invalidate(key_id)
    try:
        async with svc.sessionmaker.begin() as s:
            await s.delete(await _own(s, caller, key_id))
    finally:
        _CACHE.invalidate(key_id)


async def check_signed(
    *, svc: Services, guard: ReplayGuard, headers: Mapping[str, str], method: str, path: str,
    query: str, body: bytes | None, allow_unsigned_payload: bool,
) -> tuple[str, str]:  # fmt: skip
    """(user id, key id) of a validly signed request; ``Unauthenticated`` otherwise (unknown,
    disabled or expired key, bad or stale signature, replay)."""
    signed = parse_signed_headers(headers)
    now = utcnow()
    hit = _CACHE.get(signed.key_id)
    if hit is not None:
        row, secret = hit
    else:
        epoch = _CACHE.epoch
        async with svc.sessionmaker() as s:
            found = await s.get(AccessKeyRow, signed.key_id)
        if found is None:
            raise Unauthenticated("unknown, disabled or expired AccessKey")
        row, secret = found, svc.secrets.open(found.secret, _context(found.id))
        _CACHE.put(row, secret, epoch)
    if not row.enabled or (row.expires_at is not None and row.expires_at < now):
        raise Unauthenticated("unknown, disabled or expired AccessKey")
    verify(signed, secret=secret, method=method, path=path, query=query, body=body,
           replay_guard=guard, allow_unsigned_payload=allow_unsigned_payload)  # fmt: skip
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        async with svc.sessionmaker.begin() as s:
            stored = await s.get(AccessKeyRow, row.id)
            if stored is not None:
                stored.last_used_at = now
    return row.user_id, row.id
