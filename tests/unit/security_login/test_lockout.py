"""Lockout back-off: the schedule, the cap, lock end times and the time left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.api.errors import CorralError, InvalidInput
from corral.server.security.lockout import LockoutPolicy

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_default_schedule() -> None:
    policy = LockoutPolicy()
    delays = [policy.delay_after(n) for n in range(12)]
    assert delays == [0, 0, 0, 0, 0, 30, 60, 120, 240, 480, 900, 900]


def test_custom_schedule_and_huge_counts() -> None:
    policy = LockoutPolicy(threshold=3, base_delay_s=1, max_delay_s=10)
    assert [policy.delay_after(n) for n in range(8)] == [0, 0, 0, 1, 2, 4, 8, 10]
    assert policy.delay_after(10**9) == 10
    assert policy.delay_after(-1) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0},
        {"base_delay_s": 0},
        {"base_delay_s": -1},
        {"base_delay_s": 60, "max_delay_s": 30},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        LockoutPolicy(**kwargs)  # type: ignore[arg-type]


def test_locked_until() -> None:
    policy = LockoutPolicy()
    assert policy.locked_until(4, T0) is None
    assert policy.locked_until(5, None) is None
    assert policy.locked_until(5, T0) == T0 + timedelta(seconds=30)
    assert policy.locked_until(7, T0) == T0 + timedelta(seconds=120)
    assert policy.locked_until(50, T0) == T0 + timedelta(seconds=900)


def test_retry_after_counts_down_to_zero() -> None:
    policy = LockoutPolicy()
    assert policy.retry_after_s(5, T0, now=T0) == 30
    assert policy.retry_after_s(5, T0, now=T0 + timedelta(seconds=10.5)) == 19.5
    assert policy.retry_after_s(5, T0, now=T0 + timedelta(seconds=30)) == 0
    assert policy.retry_after_s(5, T0, now=T0 + timedelta(hours=1)) == 0
    assert policy.retry_after_s(4, T0, now=T0) == 0
    assert policy.retry_after_s(6, None, now=T0) == 0


def test_naive_datetimes_are_refused() -> None:
    policy = LockoutPolicy()
    naive = T0.replace(tzinfo=None)
    with pytest.raises(CorralError):
        policy.locked_until(5, naive)
    with pytest.raises(CorralError):
        policy.retry_after_s(5, T0, now=naive)


def test_policy_is_immutable() -> None:
    policy = LockoutPolicy()
    with pytest.raises(AttributeError):
        policy.threshold = 1  # type: ignore[misc]
