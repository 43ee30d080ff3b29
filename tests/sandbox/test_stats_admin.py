"""Introspection counters and the admin routes that expose them out of process."""

from __future__ import annotations

import json

import pytest

from sandbox.config import Faults
from sandbox.errors import SandboxConfigError
from tests.sandbox.conftest import Env, complete, person


def test_counters_count_and_reset(sb: Env) -> None:
    sandbox, client, clock = sb
    body = {"contacts": [person(1), person(2)]}
    batch = client.bulk(body["contacts"]).json()["batchId"]
    complete(client, clock, batch)
    client.get("/lists")
    counts = sandbox.request_counts()
    assert counts == {"POST /import/bulk_import": 1, "GET /import/info": 1, "GET /lists": 1}
    assert sandbox.largest_request_bytes() == len(json.dumps(body).encode())
    assert sandbox.contacts_count() == 2
    sandbox.reset_stats()
    assert sandbox.request_counts() == {} and sandbox.largest_request_bytes() == 0
    assert sandbox.contacts_count() == 2  # the account's data is not statistics


def test_admin_routes_expose_members_contacts_stats_and_unsubscribe(sb: Env) -> None:
    sandbox, client, clock = sb
    admin = f"{sandbox.base_url}/_sandbox"
    batch = client.bulk([person(1, subscribe=[{"listid": "1"}])]).json()["batchId"]
    complete(client, clock, batch)
    members = client.session.get(f"{admin}/lists/1/members", timeout=10).json()
    assert members["emails"] == ["person1@example.com"]
    found = client.session.get(f"{admin}/contacts", params={"email": "Person1@example.com"})
    assert found.json()["contact"]["lists"] == {"1": 1}
    out = client.session.post(
        f"{admin}/unsubscribe", json={"email": "person1@example.com", "list": "1"}, timeout=10
    )
    assert out.status_code == 200
    assert sandbox.list_members("1", status=2) == {"person1@example.com"}
    stats = client.session.get(f"{admin}/stats", timeout=10).json()
    assert stats["contacts"] == 1 and stats["request_counts"]["POST /import/bulk_import"] == 1
    assert client.session.post(f"{admin}/reset_stats", timeout=10).status_code == 200
    assert sandbox.request_counts() == {}


def test_bad_fault_settings_are_the_sandboxs_own_error_and_a_400_over_http(sb: Env) -> None:
    """The sandbox is a separate program: its configuration errors are its own class (not the
    exporter's), name the setting, and come back over the admin route as 400s."""
    with pytest.raises(SandboxConfigError) as caught:
        Faults(http_503_rate=2.0)
    assert caught.value.field == "faults.http_503_rate"
    assert not any(c.__module__.startswith("exporter") for c in type(caught.value).__mro__)

    sandbox, client, _clock = sb
    admin = f"{sandbox.base_url}/_sandbox/faults"
    for bad in ({"http_503_rate": 2.0}, {"colour": 1}, [1]):
        answer = client.session.post(admin, json=bad, timeout=10)
        assert answer.status_code == 400, bad
        assert "faults" in answer.json()["message"]
    assert client.session.get(admin, timeout=10).json()["faults"]["http_503_rate"] == 0.0
