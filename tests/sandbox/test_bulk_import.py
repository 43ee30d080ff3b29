"""Bulk import: limits, whole-request validation, the asynchronous life of a batch, upserts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.sandbox.conftest import Env, complete, person


def _queued(response: Any) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] == 1 and body["message"] == "Contact import queued"
    return str(body["batchId"])


def test_status_is_false_then_waiting_claimed_active_completed(sb: Env) -> None:
    sandbox, client, clock = sb
    batch = _queued(client.bulk([person(1), person(2)]))
    seen = [client.info(batch)["status"]]
    for step in (0.99, 0.01, 0.5, 0.25):
        clock.advance(step)
        seen.append(client.info(batch)["status"])
    assert seen == [False, False, "waiting", "claimed", "active"]
    assert sandbox.contact("person1@example.com") is None  # applied at completion only
    clock.advance(0.5 + 0.004 * 2)
    info = client.info(batch)
    assert info["status"] == "completed"
    assert sorted(info["success"]) == ["1", "2"] and info["failure"] == []
    assert sandbox.contact("person1@example.com") is not None


def test_processing_time_grows_with_batch_size(sb: Env) -> None:
    _, client, clock = sb
    small = _queued(client.bulk([person(1)]))
    big = _queued(client.bulk([person(n) for n in range(10, 260)]))
    clock.advance(2.5)
    assert client.info(small)["status"] == "completed"
    assert client.info(big)["status"] == "active"
    clock.advance(1.0)
    assert client.info(big)["status"] == "completed"


def test_queued_contacts_is_counted_and_unknown_batches_read_false(sb: Env) -> None:
    _, client, clock = sb
    response = client.bulk([person(n) for n in range(3)])
    assert response.json()["queued_contacts"] == 3
    clock.advance(60)
    assert client.info("00000000-0000-4000-8000-000000000000")["status"] is False
    missing = client.get("/import/info")
    assert missing.status_code == 400
    assert missing.json() == {"success": 0, "message": "'batchId' is a required field."}


def test_more_than_250_contacts_is_400(sb: Env) -> None:
    sandbox, client, _ = sb
    assert client.bulk([person(n) for n in range(250)]).status_code == 200
    over = client.bulk([person(n) for n in range(251)])
    assert over.status_code == 400
    assert "250" in over.json()["failureReasons"][0]
    assert sandbox.pending_batches() == 1


def _body_of_size(size: int) -> bytes:
    base = json.dumps({"contacts": [{"email": "a@example.com", "first_name": ""}]}).encode()
    padding = size - len(base)
    body = json.dumps({"contacts": [{"email": "a@example.com", "first_name": "x" * padding}]})
    assert len(body.encode()) == size
    return body.encode()


def test_body_must_stay_below_400000_bytes(sb: Env) -> None:
    sandbox, client, _ = sb
    headers = {"Content-Type": "application/json"}
    url = client.base + "/import/bulk_import"
    ok = client.session.post(url, data=_body_of_size(399_999), headers=headers, timeout=10)
    too_big = client.session.post(url, data=_body_of_size(400_000), headers=headers, timeout=10)
    assert ok.status_code == 200
    assert too_big.status_code == 413 and too_big.json()["success"] == 0
    assert sandbox.largest_request_bytes() == 400_000


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"email": "not-an-email"}, "incorrect format"),
        ({"email": "two@@example.com"}, "incorrect format"),
        ({"first_name": "No Email"}, "required"),
        ({"email": "x@example.com", "fields": [{"id": 99, "value": "v"}]}, "does not exist"),
        ({"email": "x@example.com", "fields": [{"id": 2, "value": "05/01/2024"}]}, "YYYY-MM-DD"),
        ({"email": "x@example.com", "subscribe": [{"listid": "77"}]}, "does not exist"),
        ({"email": "x@example.com", "tags": ["ok", 5]}, "tags"),
        ({"email": "x@example.com", "first_name": 12}, "string"),
        ({"email": "x@example.com", "exclude_automations": "yes"}, "boolean"),
    ],
)
def test_one_bad_contact_rejects_the_whole_request(
    sb: Env,
    bad: dict[str, Any],
    reason: str,
) -> None:
    sandbox, client, clock = sb
    response = client.bulk([person(1), person(2), bad, person(4)])
    assert response.status_code == 400
    body = response.json()
    assert body["success"] == 0
    assert [r["contact"] for r in body["failureReasons"]] == [3]  # 1-based
    assert reason in body["failureReasons"][0]["failureReason"]
    clock.advance(60)
    assert sandbox.contacts_count() == 0 and sandbox.pending_batches() == 0


def test_every_bad_contact_is_named(sb: Env) -> None:
    _, client, _ = sb
    response = client.bulk([{"email": "bad"}, person(2), {"email": ""}])
    assert [r["contact"] for r in response.json()["failureReasons"]] == [1, 3]


def test_upsert_by_email_is_case_insensitive(sb: Env) -> None:
    sandbox, client, clock = sb
    first = _queued(client.bulk([{"email": "Ann@Example.com", "first_name": "Ann"}]))
    complete(client, clock, first)
    second = _queued(
        client.bulk([{"email": "ANN@example.COM", "last_name": "Lee", "phone": "+1 555"}])
    )
    info = complete(client, clock, second)
    assert info["success"] == []  # an update creates no contact id
    assert sandbox.contacts_count() == 1
    stored = sandbox.contact("ann@example.com")
    assert stored is not None
    assert (stored["first_name"], stored["last_name"], stored["phone"]) == ("Ann", "Lee", "+1 555")


def test_fields_tags_and_lists_are_applied(sb: Env) -> None:
    sandbox, client, clock = sb
    contact = person(
        1,
        fields=[{"id": 1, "value": "gold"}, {"id": "2", "value": "2024-05-01"}],
        tags=["vip", "Brand New"],
        subscribe=[{"listid": "1"}, {"listid": 2}],
    )
    complete(client, clock, _queued(client.bulk([contact])))
    stored = sandbox.contact("PERSON1@example.com")
    assert stored is not None
    assert stored["fields"] == {"1": "gold", "2": "2024-05-01"}
    assert stored["tags"] == ["vip", "Brand New"]
    assert stored["lists"] == {"1": 1, "2": 1}
    tags = client.get("/tags", params={"limit": 100}).json()["tags"]
    assert sorted(t["tag"] for t in tags) == ["Brand New", "vip"]


def test_bulk_import_never_resubscribes_an_unsubscribed_contact(sb: Env) -> None:
    sandbox, client, clock = sb
    subscribe = [person(1, subscribe=[{"listid": "1"}])]
    complete(client, clock, _queued(client.bulk(subscribe)))
    assert sandbox.list_members("1") == {"person1@example.com"}
    sandbox.unsubscribe("person1@example.com", "1")
    complete(client, clock, _queued(client.bulk(subscribe)))
    assert sandbox.list_members("1", status=1) == set()
    assert sandbox.list_members("1", status=2) == {"person1@example.com"}


def test_bulk_unsubscribe_marks_status_2(sb: Env) -> None:
    sandbox, client, clock = sb
    complete(client, clock, _queued(client.bulk([person(1, subscribe=[{"listid": "1"}])])))
    complete(client, clock, _queued(client.bulk([person(1, unsubscribe=[{"listid": "1"}])])))
    assert sandbox.list_members("1", status=2) == {"person1@example.com"}


def test_exclude_automations_is_honoured_top_level_and_per_contact(sb: Env) -> None:
    sandbox, client, clock = sb
    complete(client, clock, _queued(client.bulk([person(1), person(2)])))
    assert sandbox.automations_triggered() == 2
    top = client.bulk([person(3), person(4)], exclude_automations=True)
    complete(client, clock, _queued(top))
    per_contact = [person(5, exclude_automations=True), person(6)]
    complete(client, clock, _queued(client.bulk(per_contact)))
    assert sandbox.automations_triggered() == 3  # only person 6 added one
    bad = client.bulk([person(7)], exclude_automations="true")
    assert bad.status_code == 400


def test_import_time_failures_are_listed_and_skipped(sb: Env) -> None:
    sandbox, client, clock = sb
    batch = _queued(client.bulk([person(1), {"email": "invalid.email@invalidDomain"}]))
    info = complete(client, clock, batch)
    assert info["failure"] == ["invalid.email@invalidDomain"]
    assert sandbox.contacts_count() == 1


def test_unknown_contact_keys_are_silently_dropped_like_the_api(sb: Env) -> None:
    sandbox, client, clock = sb
    complete(client, clock, _queued(client.bulk([{"email": "a@example.com", "firstName": "A"}])))
    stored = sandbox.contact("a@example.com")
    assert stored is not None and stored["first_name"] == ""
    assert sandbox.ignored_keys() == {"bulk_import:firstName": 1}


def test_summary_lists_outstanding_then_completed(sb: Env) -> None:
    _, client, clock = sb
    callback = {"url": "http://example.com/hook", "requestType": "GET"}
    batch = _queued(client.bulk([person(1), person(2)], callback=callback))
    pending = client.get("/import/bulk_import").json()
    assert [(d["batches"], d["contacts"]) for d in pending["outstanding"]] == [("1", "2")]
    assert pending["recentlyCompleted"] == []
    complete(client, clock, batch)
    done = client.get("/import/bulk_import").json()
    assert done["outstanding"] == []
    assert [(d["batches"], d["contacts"]) for d in done["recentlyCompleted"]] == [("1", "2")]


def test_invalid_json_and_missing_contacts_are_400(sb: Env) -> None:
    _, client, _ = sb
    url = client.base + "/import/bulk_import"
    assert client.session.post(url, data=b"{nope", timeout=10).status_code == 400
    assert client.post("/import/bulk_import", {"contacts": []}).status_code == 400
    assert client.post("/import/bulk_import", {"people": [person(1)]}).status_code == 400
