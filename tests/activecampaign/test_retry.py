"""The retry policy as a value: caps, jitter, Retry-After and the deadline."""

from __future__ import annotations

import random

import pytest

from exporter.activecampaign import NO_RETRY, RetryPolicy
from exporter.errors import FatalApiError, RetriableApiError

from .fakes import FakeClock


def failing(errors: list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return attempt, calls


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stays_within_its_fraction_and_is_seedable() -> None:
    policy = RetryPolicy(initial_backoff=4.0, jitter=0.5)
    waits = [policy.backoff(1, random.Random(seed)) for seed in range(50)]
    assert all(2.0 <= w <= 4.0 for w in waits)
    assert len(set(waits)) > 1
    assert policy.backoff(1, random.Random(7)) == policy.backoff(1, random.Random(7))


def test_retry_after_wins_and_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=60.0, jitter=0.0)
    rng = random.Random(0)
    assert policy.delay(1, RetriableApiError("x", retry_after=30.0), rng) == 30.0
    assert policy.delay(1, RetriableApiError("x", retry_after=3600.0), rng) == 60.0
    assert policy.delay(3, RetriableApiError("x"), rng) == 4.0


def test_stops_after_max_attempts_and_reraises_the_last_error() -> None:
    clock = FakeClock()
    errors: list[Exception] = [RetriableApiError(f"e{i}") for i in range(5)]
    attempt, calls = failing(errors)
    with pytest.raises(RetriableApiError, match="e3"):
        RetryPolicy(max_attempts=4, jitter=0.0).call(attempt, sleep=clock.sleep, clock=clock)
    assert len(calls) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_deadline_bounds_the_whole_call() -> None:
    clock = FakeClock()
    attempt, calls = failing([RetriableApiError("slow", retry_after=40.0)] * 10)
    policy = RetryPolicy(max_attempts=10, deadline=100.0)
    with pytest.raises(RetriableApiError):
        policy.call(attempt, sleep=clock.sleep, clock=clock)
    # 0, 40, 80 start; a fourth at 120 would cross the 100 s deadline.
    assert len(calls) == 3 and clock.sleeps == [40.0, 40.0]


def test_fatal_errors_are_never_retried() -> None:
    clock = FakeClock()
    attempt, calls = failing([FatalApiError("no")])
    with pytest.raises(FatalApiError):
        RetryPolicy().call(attempt, sleep=clock.sleep, clock=clock)
    assert len(calls) == 1 and clock.sleeps == []


def test_success_after_retries_returns_the_value() -> None:
    clock = FakeClock()
    attempt, calls = failing([RetriableApiError("a"), RetriableApiError("b")], result="done")
    policy = RetryPolicy(jitter=0.0)
    assert policy.call(attempt, sleep=clock.sleep, clock=clock) == "done"
    assert len(calls) == 3


def test_no_retry_policy_tries_once() -> None:
    clock = FakeClock()
    attempt, calls = failing([RetriableApiError("a")])
    with pytest.raises(RetriableApiError):
        NO_RETRY.call(attempt, sleep=clock.sleep, clock=clock)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"jitter": 1.5}, {"initial_backoff": -1}, {"deadline": -1}]
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
