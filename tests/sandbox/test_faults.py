"""Injected faults: each kind does what it says, and the same seed gives the same faults."""

from __future__ import annotations

import pytest
import requests

from sandbox import Faults
from tests.sandbox.conftest import Env, Make, complete, person


def _outcomes(make: Make, seed: int, faults: Faults, n: int = 40) -> list[str]:
    _, client, _ = make(seed=seed, faults=faults)
    out: list[str] = []
    for _ in range(n):
        try:
            out.append(str(client.get("/users/me").status_code))
        except requests.ConnectionError:
            out.append("reset")
    return out


@pytest.mark.parametrize(
    ("faults", "fault"),
    [
        (Faults(http_503_rate=0.4), "503"),
        (Faults(http_429_rate=0.4), "429"),
        (Faults(reset_rate=0.4), "reset"),
    ],
)
def test_request_faults_are_deterministic_under_a_seed(
    make: Make, faults: Faults, fault: str
) -> None:
    first = _outcomes(make, 7, faults)
    again = _outcomes(make, 7, faults)
    other = _outcomes(make, 8, faults)
    assert first == again
    assert fault in first and "200" in first
    assert other != first


def test_503_is_an_html_page(make: Make) -> None:
    sandbox, client, _ = make(faults=Faults(http_503_rate=1.0))
    response = client.get("/users/me")
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    assert sandbox.injected_fault_counts() == {"http_503": 1}


def test_forced_429_has_scaled_retry_after_and_is_not_real_throttling(make: Make) -> None:
    sandbox, client, _ = make(faults=Faults(http_429_rate=1.0, retry_after=1.0), time_scale=4.0)
    response = client.get("/users/me")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.250"
    assert sandbox.throttled_count() == 0
    assert sandbox.injected_fault_counts() == {"http_429": 1}


def test_reset_drops_the_request_unprocessed(make: Make) -> None:
    sandbox, client, clock = make(faults=Faults(reset_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        client.bulk([person(1)])
    clock.advance(60)
    assert sandbox.contacts_count() == 0 and sandbox.pending_batches() == 0


def test_lost_response_is_processed_but_never_answered(make: Make) -> None:
    sandbox, client, clock = make(faults=Faults(lost_response_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        client.bulk([person(1)])
    clock.advance(60)
    assert sandbox.contacts_count() == 1


def test_slow_answers_trip_client_timeouts(make: Make) -> None:
    sandbox, client, _ = make(faults=Faults(slow_rate=1.0, slow_seconds=2.0))
    with pytest.raises(requests.ReadTimeout):
        client.session.get(client.base + "/users/me", timeout=0.2)
    assert sandbox.injected_fault_counts() == {"slow": 1}


@pytest.mark.parametrize(
    ("faults", "status"),
    [
        (Faults(batch_failed_rate=1.0), "failed"),
        (Faults(batch_interrupted_rate=1.0), "interrupted"),
    ],
)
def test_failed_and_interrupted_batches_apply_nothing(
    make: Make, faults: Faults, status: str
) -> None:
    sandbox, client, clock = make(faults=faults)
    batch = client.bulk([person(1), person(2)]).json()["batchId"]
    info = complete(client, clock, batch)
    assert info["status"] == status
    assert sandbox.contacts_count() == 0


def test_failure_emails_land_in_failure_and_are_not_imported(make: Make) -> None:
    faults = Faults(failure_emails=frozenset({"PERSON2@example.com"}))
    sandbox, client, clock = make(faults=faults)
    batch = client.bulk([person(1), person(2)]).json()["batchId"]
    info = complete(client, clock, batch)
    assert info["failure"] == ["person2@example.com"]
    assert sandbox.contact("person2@example.com") is None
    assert sandbox.contact("person1@example.com") is not None
    assert sandbox.injected_fault_counts() == {"failure_email": 1}


def test_faults_can_target_endpoints_and_change_at_run_time(sb: Env) -> None:
    sandbox, client, _ = sb
    assert client.get("/users/me").status_code == 200
    sandbox.set_faults(Faults(http_503_rate=1.0, endpoints=frozenset({"POST /import/bulk_import"})))
    assert client.get("/users/me").status_code == 200
    assert client.bulk([person(1)]).status_code == 503
    admin = client.session.post(
        f"{sandbox.base_url}/_sandbox/faults", json={"http_503_rate": 0}, timeout=10
    )
    assert admin.status_code == 200
    assert client.bulk([person(1)]).status_code == 200
    rejected = client.session.post(
        f"{sandbox.base_url}/_sandbox/faults", json={"bogus": 1}, timeout=10
    )
    assert rejected.status_code == 400
