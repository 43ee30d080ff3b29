"""contact/sync, contactLists, contact lookups, lists, fields, tags, users/me, pagination."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from tests.sandbox.conftest import Env, Make, complete, person


def _sync(client: Any, **contact: Any) -> Any:
    return client.post("/contact/sync", {"contact": contact})


def _load(sb: Env, count: int, **extra: Any) -> None:
    _, client, clock = sb
    batch = client.bulk([person(n, **extra) for n in range(1, count + 1)]).json()["batchId"]
    complete(client, clock, batch)


def test_contact_sync_creates_201_then_updates_200_case_insensitively(sb: Env) -> None:
    sandbox, client, _ = sb
    created = _sync(client, email="Bo@Example.com", firstName="Bo", fieldValues=[])
    assert created.status_code == 201
    assert created.json()["contact"]["email"] == "bo@example.com"
    updated = _sync(
        client, email="BO@example.com", lastName="Li", fieldValues=[{"field": "1", "value": "x"}]
    )
    assert updated.status_code == 200
    assert updated.json()["contact"]["id"] == created.json()["contact"]["id"]
    stored = sandbox.contact("bo@example.com")
    assert stored is not None
    assert (stored["first_name"], stored["last_name"], stored["fields"]) == ("Bo", "Li", {"1": "x"})
    assert sandbox.contacts_count() == 1


def test_contact_sync_rejects_bad_input_with_422_errors(sb: Env) -> None:
    sandbox, client, _ = sb
    for contact, code in (
        ({"firstName": "No email"}, "field_missing"),
        ({"email": "nope"}, "email_invalid"),
        ({"email": "a@b.com", "fieldValues": [{"field": "42", "value": "x"}]}, "related_missing"),
    ):
        response = _sync(client, **contact)
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == code
    assert sandbox.contacts_count() == 0


def test_contact_lists_subscribes_unsubscribes_and_does_resubscribe(sb: Env) -> None:
    sandbox, client, _ = sb
    contact_id = _sync(client, email="c@example.com").json()["contact"]["id"]

    def set_status(status: int) -> Any:
        return client.post(
            "/contactLists", {"contactList": {"list": "1", "contact": contact_id, "status": status}}
        )

    assert set_status(1).status_code == 200
    assert sandbox.list_members("1") == {"c@example.com"}
    answer = set_status(2)
    assert answer.json()["contactList"]["status"] == 2
    assert sandbox.list_members("1", status=2) == {"c@example.com"}
    assert set_status(1).status_code == 200  # the API lets this re-subscribe an opt-out
    assert sandbox.list_members("1") == {"c@example.com"}


def test_contact_lists_rejects_unknown_list_and_contact(sb: Env) -> None:
    _, client, _ = sb
    contact_id = _sync(client, email="c@example.com").json()["contact"]["id"]
    bad_list = {"contactList": {"list": "9", "contact": contact_id, "status": 1}}
    bad_contact = {"contactList": {"list": "1", "contact": "999", "status": 1}}
    assert client.post("/contactLists", bad_list).status_code == 422
    assert client.post("/contactLists", bad_contact).status_code == 422


def test_contacts_filters_by_email_list_and_status(sb: Env) -> None:
    sandbox, client, _ = sb
    _load(sb, 5, subscribe=[{"listid": "1"}])
    sandbox.unsubscribe("person2@example.com", "1")
    by_email = client.get("/contacts", params={"email": "PERSON3@example.com"}).json()
    assert [c["email"] for c in by_email["contacts"]] == ["person3@example.com"]
    active = client.get("/contacts", params={"listid": "1", "status": "1"}).json()
    assert active["meta"]["total"] == "4"
    gone = client.get("/contacts", params={"listid": "1", "status": "2"}).json()
    assert [c["email"] for c in gone["contacts"]] == ["person2@example.com"]


def test_walking_with_id_greater_and_ascending_order(sb: Env) -> None:
    _, client, _ = sb
    _load(sb, 7)
    seen: list[str] = []
    last = 0
    while True:
        page = client.get(
            "/contacts", params={"id_greater": last, "orders[id]": "ASC", "limit": 3}
        ).json()["contacts"]
        if not page:
            break
        seen.extend(c["id"] for c in page)
        last = int(page[-1]["id"])
    assert seen == [str(n) for n in range(1, 8)]
    newest_first = client.get("/contacts").json()["contacts"]
    assert [c["id"] for c in newest_first][:2] == ["7", "6"]


def test_updated_after_finds_contacts_who_joined_a_list_since_then(sb: Env) -> None:
    """A list subscription updates the contact (``udate``), so ``filters[updated_after]`` finds
    an existing contact who joined the list after a date — in any offset — and nobody else."""
    _, client, clock = sb
    _load(sb, 3)
    clock.advance(1.1)  # the account's dates have whole seconds, on the sandbox's clock
    # By the account's own clock (its Date header), as the exporter takes its mark.
    mark = parsedate_to_datetime(client.get("/lists/1").headers["Date"])
    clock.advance(1.1)
    joiner = client.get("/contacts", params={"email": "person2@example.com"}).json()["contacts"]
    body = {"contactList": {"list": "1", "contact": joiner[0]["id"], "status": 1}}
    assert client.post("/contactLists", body).status_code in (200, 201)

    def updated_since(when: str) -> list[str]:
        params = {"listid": "1", "status": "1", "filters[updated_after]": when}
        return [c["email"] for c in client.get("/contacts", params=params).json()["contacts"]]

    assert updated_since(mark.isoformat()) == ["person2@example.com"]
    paris = timezone(timedelta(hours=1))
    assert updated_since(mark.astimezone(paris).isoformat()) == ["person2@example.com"]
    assert updated_since((mark + timedelta(seconds=5)).isoformat()) == []
    bad = client.get("/contacts", params={"filters[updated_after]": "yesterday"})
    assert bad.status_code == 400


def test_pagination_defaults_maximum_offset_and_string_total(make: Make) -> None:
    _, client, _ = make(tags=[f"tag-{n:03d}" for n in range(130)])
    default = client.get("/tags").json()
    assert len(default["tags"]) == 20 and default["meta"]["total"] == "130"
    assert len(client.get("/tags", params={"limit": 500}).json()["tags"]) == 100
    tail = client.get("/tags", params={"limit": 100, "offset": 120}).json()["tags"]
    assert [t["tag"] for t in tail] == [f"tag-{n:03d}" for n in range(120, 130)]
    assert all(isinstance(t["id"], str) for t in tail)


def test_contacts_pagination_defaults_to_20(sb: Env) -> None:
    _, client, _ = sb
    _load(sb, 25)
    page = client.get("/contacts").json()
    assert len(page["contacts"]) == 20 and page["meta"]["total"] == "25"
    rest = client.get("/contacts", params={"offset": 20}).json()["contacts"]
    assert len(rest) == 5


def test_contact_detail_and_memberships(sb: Env) -> None:
    _, client, _ = sb
    _load(sb, 1, subscribe=[{"listid": "2"}], fields=[{"id": 1, "value": "gold"}])
    detail = client.get("/contacts/1").json()
    assert detail["contact"]["email"] == "person1@example.com"
    assert [v["value"] for v in detail["fieldValues"]] == ["gold"]
    lists = client.get("/contacts/1/contactLists").json()["contactLists"]
    assert [(m["list"], m["status"]) for m in lists] == [("2", "1")]
    missing = client.get("/contacts/99")
    assert missing.status_code == 404
    assert missing.json() == {"message": "No Result found for Subscriber with id 99"}


def test_lists_and_unknown_list_404_body(sb: Env) -> None:
    _, client, _ = sb
    lists = client.get("/lists").json()
    names = [(x["id"], x["name"]) for x in lists["lists"]]
    assert names == [("1", "Newsletter"), ("2", "Customers")]
    assert lists["meta"]["total"] == "2"
    assert client.get("/lists/2").json()["list"]["name"] == "Customers"
    missing = client.get("/lists/31")
    assert missing.status_code == 404
    assert missing.json() == {"message": "No Result found for _List with id 31"}


def test_fields_tags_and_user(sb: Env) -> None:
    _, client, _ = sb
    fields = client.get("/fields").json()
    assert [(f["id"], f["perstag"], f["type"]) for f in fields["fields"]] == [
        ("1", "LOYALTY_TIER", "text"),
        ("2", "MEMBER_SINCE", "date"),
        ("3", "COLOURS", "multiselect"),
    ]
    assert fields["meta"]["total"] == "3"
    assert [t["tag"] for t in client.get("/tags").json()["tags"]] == ["vip"]
    assert client.get("/users/me").json()["user"]["id"] == "1"


def test_the_accounts_clock_runs_at_the_time_scale(make: Make) -> None:
    """Dates the account writes and its ``Date`` header keep ActiveCampaign's real distances:
    at time scale 10, one real second is ten of the account's (else a mark taken from the
    header would sit seconds behind contacts updated a moment ago)."""
    _, client, clock = make(time_scale=10.0)

    def header() -> float:
        return parsedate_to_datetime(client.get("/lists/1").headers["Date"]).timestamp()

    before = header()
    clock.advance(3.0)
    assert 29 <= header() - before <= 31
    batch = client.bulk([person(1)]).json()["batchId"]
    complete(client, clock, batch)
    udate = client.get("/contacts", params={"email": "person1@example.com"}).json()["contacts"]
    written = datetime.fromisoformat(udate[0]["udate"]).timestamp()
    assert written - before >= 30
