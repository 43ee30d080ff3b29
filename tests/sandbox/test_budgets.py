"""Rate budgets: 5 requests per second (429), bulk 100 multi / 20 single per minute (400),
time scale, and lifting them. Time is a manual clock, so nothing here depends on speed."""

from __future__ import annotations

from sandbox import SandboxConfig
from tests.sandbox.conftest import KEY, Make, person

RATE_LIMITED = "Rate limit exceeded."


def test_sixth_request_in_a_second_is_429_with_headers(make: Make) -> None:
    sandbox, client, clock = make(limits=True)
    answers = [client.get("/users/me") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    throttled = answers[-1]
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.headers["RateLimit-Limit"] == "5"
    assert sandbox.throttled_count() == 1
    clock.advance(1.0)
    assert client.get("/users/me").status_code == 200


def test_bulk_calls_count_against_the_account_budget(make: Make) -> None:
    _, client, _ = make(limits=True)
    for n in range(5):
        assert client.bulk([person(2 * n), person(2 * n + 1)]).status_code == 200
    assert client.get("/lists").status_code == 429


def test_bulk_multi_budget_is_100_per_minute_answered_400(make: Make) -> None:
    sandbox, client, clock = make(limits=True, rate_per_second=10_000)
    codes = [client.bulk([person(2 * n), person(2 * n + 1)]).status_code for n in range(100)]
    assert codes == [200] * 100
    over = client.bulk([person(1000), person(1001)])
    assert over.status_code == 400
    assert over.json()["success"] == 0 and over.json()["message"] == RATE_LIMITED
    assert "Retry-After" not in over.headers
    # Single-contact requests have their own budget.
    assert client.bulk([person(2000)]).status_code == 200
    assert sandbox.throttled_count() == 1
    clock.advance(60.0)
    assert client.bulk([person(1000), person(1001)]).status_code == 200


def test_bulk_single_budget_is_20_per_minute(make: Make) -> None:
    _, client, clock = make(limits=True, rate_per_second=10_000)
    assert [client.bulk([person(n)]).status_code for n in range(20)] == [200] * 20
    over = client.bulk([person(99)])
    assert (over.status_code, over.json()["message"]) == (400, RATE_LIMITED)
    assert client.bulk([person(100), person(101)]).status_code == 200
    clock.advance(60.0)
    assert client.bulk([person(99)]).status_code == 200


def test_defaults_are_the_documented_budgets() -> None:
    config = SandboxConfig(api_key=KEY)
    assert (config.rate_per_second, config.bulk_multi_per_minute) == (5, 100)
    assert (config.bulk_single_per_minute, config.limits, config.time_scale) == (20, True, 1.0)


def test_no_limits_lifts_every_budget(make: Make) -> None:
    sandbox, client, _ = make(limits=False)
    assert all(client.bulk([person(n)]).status_code == 200 for n in range(30))
    assert all(client.get("/users/me").status_code == 200 for _ in range(10))
    assert sandbox.throttled_count() == 0


def test_time_scale_shrinks_windows_and_retry_after(make: Make) -> None:
    _, client, clock = make(limits=True, time_scale=10.0, rate_per_second=5)
    codes = [client.get("/users/me").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    assert client.get("/users/me").headers["Retry-After"] == "0.100"
    clock.advance(0.1)  # one sandbox second
    assert client.get("/users/me").status_code == 200


def test_time_scale_applies_to_the_bulk_minute(make: Make) -> None:
    _, client, clock = make(
        limits=True, time_scale=60.0, rate_per_second=10_000, bulk_multi_per_minute=2
    )
    pair = [person(1), person(2)]
    assert [client.bulk(pair).status_code for _ in range(3)] == [200, 200, 400]
    clock.advance(1.0)  # one sandbox minute
    assert client.bulk(pair).status_code == 200


def test_peaks_are_reported_per_sandbox_second_and_minute(make: Make) -> None:
    sandbox, client, clock = make(limits=True)
    for _ in range(7):
        client.get("/users/me")
    clock.advance(2.0)
    client.bulk([person(1), person(2)])
    client.bulk([person(3)])
    assert sandbox.peak_requests_per_second() == 7.0  # throttled requests were received too
    assert sandbox.bulk_requests_per_minute_peak() == 2.0
    assert sandbox.throttled_count() == 2
