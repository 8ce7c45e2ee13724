"""The auth service's sliding-window rate limiter, on a fake clock."""

from __future__ import annotations

import pytest

from devstack.stack import auth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_holds_per_key_in_a_sliding_window():
    clock = Clock()
    rl = auth.RateLimiter(3, window=300, clock=clock)
    for _ in range(3):
        rl.take("10.0.0.1", "sign-ins")
    with pytest.raises(auth.TooManyRequests) as err:
        rl.take("10.0.0.1", "sign-ins")
    assert err.value.status == 429 and err.value.code == "over_request_rate_limit"
    assert err.value.extra["retry_after"] == 301
    rl.take("10.0.0.2", "sign-ins")  # another key is not affected
    clock.now += 299
    assert rl.retry_after("10.0.0.1") == pytest.approx(1.0)
    clock.now += 1
    assert rl.retry_after("10.0.0.1") is None
    rl.take("10.0.0.1", "sign-ins")


def test_a_refused_attempt_is_not_counted_and_reset_forgets():
    clock = Clock()
    rl = auth.RateLimiter(1, window=10, clock=clock)
    rl.take("k", "x")
    for _ in range(5):
        with pytest.raises(auth.TooManyRequests):
            rl.take("k", "x")
    clock.now += 10
    rl.take("k", "x")
    rl.reset("k")
    assert rl.retry_after("k") is None


def test_memory_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "MAX_TRACKED_KEYS", 100)
    clock = Clock()
    rl = auth.RateLimiter(5, window=10, clock=clock)
    for i in range(100):
        rl.add(f"ip-{i}")
    clock.now += 11
    rl.add("late")
    assert len(rl._events) == 1


def test_a_zero_limit_means_unlimited():
    rl = auth.RateLimiter(0)
    for _ in range(10):
        rl.take("k", "x")
