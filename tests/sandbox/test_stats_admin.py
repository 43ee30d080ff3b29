"""Introspection counters and the admin routes that expose them out of process."""

from __future__ import annotations

import json

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
