"""The sandbox's answers, and the requests these tests send, against ActiveCampaign's own
OpenAPI document (skipped, with the reason, when ../shared/reference is absent)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tests.openapi_contract import load_document, validate_request, validate_response
from tests.sandbox.conftest import Env, Make, complete, person


@pytest.fixture(autouse=True)
def _document() -> None:
    load_document()


def _check(response: Any, path: str, method: str = "GET") -> Any:
    body = response.json()
    assert validate_response(path, method, response.status_code, body), (
        f"{method} {path} {response.status_code} has no documented schema"
    )
    return body


def test_bulk_import_request_and_answers(make: Make) -> None:
    _, client, clock = make(limits=True, rate_per_second=10_000, bulk_multi_per_minute=1)
    contacts = [
        person(1, fields=[{"id": 1, "value": "gold"}], tags=["vip"], subscribe=[{"listid": "1"}]),
        person(2, unsubscribe=[{"listid": "2"}], phone="+1 555", customer_acct_name="Acme"),
    ]
    body = {"contacts": contacts, "callback": {"url": "http://x", "requestType": "POST"}}
    validate_request("/import/bulk_import", "POST", body)
    queued = _check(client.post("/import/bulk_import", body), "/import/bulk_import", "POST")
    _check(client.bulk([person(3), person(4)]), "/import/bulk_import", "POST")  # rate limit
    invalid = client.bulk([{"email": "bad"}])
    assert invalid.status_code == 400
    _check(invalid, "/import/bulk_import", "POST")
    clock.advance(1.2)
    _check(client.get("/import/info", params={"batchId": queued["batchId"]}), "/import/info")
    complete(client, clock, queued["batchId"])
    _check(client.get("/import/info", params={"batchId": queued["batchId"]}), "/import/info")
    _check(client.get("/import/info"), "/import/info")


def test_single_contact_endpoints(sb: Env) -> None:
    _, client, _ = sb
    sync = {"contact": {"email": "a@example.com", "firstName": "A", "fieldValues": []}}
    validate_request("/contact/sync", "POST", sync)
    created = _check(client.post("/contact/sync", sync), "/contact/sync", "POST")
    _check(client.post("/contact/sync", sync), "/contact/sync", "POST")  # 200 update
    member = {"contactList": {"list": "1", "contact": created["contact"]["id"], "status": "1"}}
    validate_request("/contactLists", "POST", member)
    _check(client.post("/contactLists", member), "/contactLists", "POST")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/contacts", {}),
        ("/contacts", {"listid": "1", "status": "1"}),
        ("/contacts", {"email": "a@example.com"}),
        ("/contacts/1", {}),
        ("/contacts/1/contactLists", {}),
        ("/contacts/404", {}),
        ("/lists", {}),
        ("/lists/1", {}),
        ("/lists/404", {}),
        ("/fields", {}),
        ("/tags", {}),
        ("/users/me", {}),
    ],
)
def test_reads(sb: Env, path: str, params: dict[str, str]) -> None:
    _, client, clock = sb
    batch = client.bulk([person(1, subscribe=[{"listid": "1"}], fields=[{"id": 1, "value": "x"}])])
    complete(client, clock, batch.json()["batchId"])
    client.post("/contact/sync", {"contact": {"email": "a@example.com"}})
    _check(client.get(path, params=params), path)


def test_the_helper_rejects_a_wrong_shape() -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_response("/api/3/lists", "GET", 200, {"lists": [{"id": 1}]})
    with pytest.raises(jsonschema.ValidationError):
        validate_request("/import/bulk_import", "POST", {"contacts": [{"first_name": "x"}]})
    assert validate_response("/contacts/5", "GET", 418, {}) is False
