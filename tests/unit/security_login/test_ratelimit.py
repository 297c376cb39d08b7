"""Token-bucket limiter: burst, refusals with the right wait, refill, eviction, injected clock."""

from __future__ import annotations

import pytest

from corral.api.errors import InvalidInput
from corral.server.security.ratelimit import RateLimiter, retry_after_seconds


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_the_wait() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=5)
    assert [limiter.hit("ip", now=0) for _ in range(5)] == [0.0] * 5
    assert limiter.hit("ip", now=0) == pytest.approx(1.0)
    assert limiter.hit("ip", cost=3, now=0) == pytest.approx(3.0)
    assert limiter.hit("ip", now=0.25) == pytest.approx(0.75)


def test_refill_over_time_and_refusals_take_nothing() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=2)
    assert limiter.hit("k", now=0) == limiter.hit("k", now=0) == 0.0
    for _ in range(3):
        assert limiter.hit("k", now=0) == pytest.approx(0.5)
    assert limiter.hit("k", now=0.5) == 0.0  # exactly one token back
    assert limiter.hit("k", now=0.5) == pytest.approx(0.5)
    assert [limiter.hit("k", now=100) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_slow_rates_give_long_waits() -> None:
    limiter = RateLimiter(rate_per_s=0.1, burst=1)
    assert limiter.hit("login:alice", now=0) == 0.0
    wait = limiter.hit("login:alice", now=0.3)
    assert wait == pytest.approx(9.7)
    assert retry_after_seconds(wait) == 10
    assert limiter.hit("login:alice", now=10) == 0.0


def test_keys_are_independent() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1)
    assert limiter.hit("a", now=0) == 0.0
    assert limiter.hit("a", now=0) > 0
    assert limiter.hit("b", now=0) == 0.0
    limiter.reset("a")
    assert limiter.hit("a", now=0) == 0.0


def test_injected_clock_is_used_by_default() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    assert limiter.hit("k") == 0.0
    assert limiter.hit("k") == pytest.approx(1.0)
    clock.now += 0.4
    assert limiter.hit("k") == pytest.approx(0.6)
    clock.now += 0.6
    assert limiter.hit("k") == 0.0


def test_a_clock_going_backwards_does_not_add_tokens() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1)
    assert limiter.hit("k", now=10) == 0.0
    assert limiter.hit("k", now=5) == pytest.approx(1.0)
    assert limiter.hit("k", now=11) == 0.0


def test_idle_buckets_are_evicted() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=5)
    limiter.hit("a", now=0)
    limiter.hit("b", now=1)
    assert len(limiter) == 2
    limiter.hit("c", now=5.5)  # "a" has been idle for burst / rate = 5 s: full again
    assert len(limiter) == 2
    limiter.hit("d", now=100)
    assert len(limiter) == 1


def test_least_recently_used_bucket_goes_at_the_cap() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_keys=2)
    assert limiter.hit("a", now=0) == 0.0
    assert limiter.hit("b", now=0) == 0.0
    assert limiter.hit("a", now=0) > 0  # "a" is now the most recently used
    assert limiter.hit("c", now=0) == 0.0  # evicts "b"
    assert len(limiter) == 2
    assert limiter.hit("a", now=0) > 0  # kept, still empty
    assert limiter.hit("b", now=0) == 0.0  # forgotten, so fresh again


def test_memory_stays_bounded_under_many_keys() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=10, max_keys=1000)
    for i in range(5000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}", now=0)
    assert len(limiter) == 1000


@pytest.mark.parametrize("cost", [0, -1, 5.5])
def test_cost_must_fit_the_bucket(cost: float) -> None:
    limiter = RateLimiter(rate_per_s=1, burst=5)
    with pytest.raises(InvalidInput):
        limiter.hit("k", cost=cost, now=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_per_s": 0, "burst": 1},
        {"rate_per_s": 1, "burst": 0.5},
        {"rate_per_s": 1, "burst": 1, "max_keys": 0},
    ],
)
def test_invalid_limiters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wait", "header"),
    [(0.0, 0), (0.2, 1), (1.0, 1), (1.0000000001, 1), (2.5, 3), (899.9, 900)],
)
def test_retry_after_rounds_up(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header
