"""In-memory token-bucket rate limiting keyed by string (client IP, user, route class).

Each key owns a bucket of ``burst`` tokens refilled at ``rate_per_s``; a request takes ``cost``
tokens or is refused with the time until enough tokens are back (the Retry-After). Memory is
bounded: a bucket idle long enough to be full again is forgotten (a fresh bucket is identical),
and at most ``max_keys`` buckets are kept, least recently used evicted first.

The state is per process: with several server workers each enforces its own limit. Not
thread-safe; meant for one asyncio event loop (``hit`` never awaits, so it is atomic there).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from corral.api.errors import InvalidInput

_EPSILON = 1e-9
"""Float slack so that a bucket refilled for exactly the right time is not refused."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: ``burst`` requests at once per key, then ``rate_per_s`` on average."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise InvalidInput(
                "a rate limiter needs rate_per_s > 0, burst >= 1 and max_keys >= 1",
                rate_per_s=rate_per_s,
                burst=burst,
                max_keys=max_keys,
            )
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._full_after_s = self.burst / self.rate_per_s

    def __len__(self) -> int:
        """The number of buckets held."""
        return len(self._buckets)

    def hit(self, key: str, cost: float = 1, now: float | None = None) -> float:
        """Take ``cost`` tokens from ``key``'s bucket: 0.0 if allowed, else the seconds until the
        same request would be allowed (nothing is taken then). ``now`` is a reading of the
        limiter's monotonic clock (default: read it). ``0 < cost <= burst``."""
        if not 0 < cost <= self.burst:
            raise InvalidInput("a rate-limit cost is > 0 and <= burst", cost=cost, burst=self.burst)
        if now is None:
            now = self._clock()
        self._evict_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._refill(bucket, now)
            self._buckets.move_to_end(key)
        if bucket.tokens + _EPSILON >= cost:
            bucket.tokens = max(0.0, bucket.tokens - cost)
            return 0.0
        return (cost - bucket.tokens) / self.rate_per_s

    def reset(self, key: str) -> None:
        """Forget ``key``'s bucket (e.g. after an administrator unblocks a client)."""
        self._buckets.pop(key, None)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated = max(bucket.updated, now)

    def _evict_idle(self, now: float) -> None:
        """Drop least recently used buckets that are certainly full again (amortised O(1))."""
        while self._buckets:
            bucket = next(iter(self._buckets.values()))
            if now - bucket.updated < self._full_after_s:
                return
            self._buckets.popitem(last=False)


def retry_after_seconds(wait_s: float) -> int:
    """The ``Retry-After`` value for a wait returned by ``hit``: whole seconds, rounded up."""
    return max(0, math.ceil(wait_s - _EPSILON))
