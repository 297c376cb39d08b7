"""The per-process cache of checked AccessKeys: a lookup that raced an invalidation is not cached."""

from __future__ import annotations

from corral.server.db.tables import AccessKeyRow
from corral.server.services.access_keys import KeyCache


def _row(key_id: str = "CKABC") -> AccessKeyRow:
    return AccessKeyRow(id=key_id, user_id="u1", enabled=True, secret="sealed")


def test_put_then_get_until_invalidated() -> None:
    cache = KeyCache()
    row = _row()
    cache.put(row, "secret", cache.epoch)
    assert cache.get("CKABC") == (row, "secret")
    cache.invalidate("CKABC")
    assert cache.get("CKABC") is None


def test_a_lookup_that_started_before_an_invalidation_is_not_cached() -> None:
    cache = KeyCache()
    epoch = cache.epoch  # the lookup starts, reads the (still enabled) row...
    cache.invalidate("CKABC")  # ...while the key is disabled
    cache.put(_row(), "secret", epoch)
    assert cache.get("CKABC") is None


def test_entries_expire_and_the_cache_is_bounded() -> None:
    expired = KeyCache(ttl_s=-1.0)
    expired.put(_row(), "secret", expired.epoch)
    assert expired.get("CKABC") is None
    small = KeyCache(max_entries=2)
    for key_id in ("CK1", "CK2", "CK3"):
        small.put(_row(key_id), "secret", small.epoch)
    assert small.get("CK3") is not None
    assert sum(small.get(k) is not None for k in ("CK1", "CK2", "CK3")) <= 2
