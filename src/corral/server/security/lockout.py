"""Back-off after repeated failed logins: a pure policy; the failure counters live in the database.

Schedule with the defaults (threshold 5, base 30 s, cap 900 s), by consecutive failures:
1-4 → no delay; 5 → 30 s; 6 → 60 s; 7 → 120 s; 8 → 240 s; 9 → 480 s; 10 and more → 900 s.

Intended use by the identity service, per account:

- before checking the password, if ``retry_after_s(failures, last_failure_at, now=now) > 0``,
  refuse without verifying (429 with Retry-After) and without counting the attempt;
- on a failed password or second factor: ``failures += 1``, ``last_failure_at = now``;
- on a successful login: ``failures = 0``.

A back-off (not a permanent lock) bounds online guessing to a handful of tries an hour while an
attacker can lock the real user out for at most ``max_delay_s`` at a time; pair it with the per-IP
rate limit of ``ratelimit`` so one client cannot keep many accounts delayed cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from corral.api.errors import CorralError, InvalidInput

_MAX_EXPONENT = 62
"""Beyond this many doublings every sane cap is reached; avoids huge floats."""


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Exponential back-off: ``delay_after(n)`` is 0 for ``n < threshold``, then ``base_delay_s``
    doubled for each failure beyond ``threshold``, capped at ``max_delay_s``."""

    threshold: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 900.0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise InvalidInput("the lockout threshold is at least 1", threshold=self.threshold)
        if self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise InvalidInput(
                "lockout delays need 0 < base_delay_s <= max_delay_s",
                base_delay_s=self.base_delay_s,
                max_delay_s=self.max_delay_s,
            )

    def delay_after(self, failures: int) -> float:
        """Seconds to wait after the last of ``failures`` consecutive failures."""
        if failures < self.threshold:
            return 0.0
        exponent = min(failures - self.threshold, _MAX_EXPONENT)
        return float(min(self.max_delay_s, self.base_delay_s * 2.0**exponent))

    def locked_until(self, failures: int, last_failure_at: datetime | None) -> datetime | None:
        """When the account may try again: ``last_failure_at + delay_after(failures)``; None when
        there is no delay (or no failure recorded). ``last_failure_at`` is timezone-aware."""
        delay = self.delay_after(failures)
        if delay == 0 or last_failure_at is None:
            return None
        _require_aware(last_failure_at)
        return last_failure_at + timedelta(seconds=delay)

    def retry_after_s(
        self, failures: int, last_failure_at: datetime | None, *, now: datetime
    ) -> float:
        """Seconds left before the account may try again at ``now`` (aware); 0 if it may now."""
        until = self.locked_until(failures, last_failure_at)
        if until is None:
            return 0.0
        _require_aware(now)
        return max(0.0, (until - now).total_seconds())


def _require_aware(when: datetime) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise CorralError("lockout times must be timezone-aware", when=when.isoformat())
