"""The client's calls: URLs, bodies, paging, parsing and the HTTPS rule."""

from __future__ import annotations

import json
import logging

import pytest

from exporter.activecampaign import (
    ActiveCampaignClient,
    ImportStatus,
    base_url_for_host,
    is_loopback_host,
)
from exporter.errors import ConfigError, FatalApiError
from exporter.planning.contacts import encode_bulk_body

from .conftest import API_KEY, BASE
from .fakes import ScriptedTransport, Sent, reply


def pages(key: str, total: int, page_size: int = 100):  # type: ignore[no-untyped-def]
    """A handler serving ``total`` items of ``key`` by limit/offset, like ActiveCampaign."""

    def handle(req: Sent):  # type: ignore[no-untyped-def]
        offset, limit = int(req.params["offset"]), min(int(req.params["limit"]), page_size)
        items = [
            {"id": str(i + 1), "title": f"F{i + 1}"}
            for i in range(offset, min(offset + limit, total))
        ]
        return reply(200, {key: items, "meta": {"total": str(total)}})

    return handle


# --- base URL and HTTPS ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://acme.api-us1.com", "https://acme.api-us1.com"),
        ("https://acme.api-us1.com/", "https://acme.api-us1.com"),
        ("https://acme.api-us1.com/api/3", "https://acme.api-us1.com"),
        ("https://acme.activehosted.com/api/3/", "https://acme.activehosted.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.5.6.7:1", "http://127.5.6.7:1"),
        ("http://localhost:9", "http://localhost:9"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_base_url_is_normalised(given: str, expected: str) -> None:
    client = ActiveCampaignClient(given, API_KEY, transport=ScriptedTransport())
    assert client.base_url == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://acme.api-us1.com",
        "http://10.0.0.1:8080",
        "http://localhost.evil.com",
        "http://128.0.0.1",
        "ftp://acme.api-us1.com",
        "acme.api-us1.com",
        "https://user:pw@acme.api-us1.com",
    ],
)
def test_plain_http_only_to_loopback(url: str) -> None:
    with pytest.raises(ConfigError):
        ActiveCampaignClient(url, API_KEY, transport=ScriptedTransport())


def test_an_api_key_is_required() -> None:
    with pytest.raises(ConfigError):
        ActiveCampaignClient(BASE, "  ", transport=ScriptedTransport())


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("acme.api-us1.com", "https://acme.api-us1.com"),
        ("127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("localhost:8123", "http://localhost:8123"),
        ("[::1]:8123", "http://[::1]:8123"),
    ],
)
def test_base_url_for_host(host: str, url: str) -> None:
    assert base_url_for_host(host) == url


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_repr_never_shows_the_key() -> None:
    client = ActiveCampaignClient(BASE, API_KEY, transport=ScriptedTransport())
    assert API_KEY not in repr(client)


# --- requests -------------------------------------------------------------------------------


def test_every_request_carries_the_key_header_and_a_timeout(make_client) -> None:
    client, transport = make_client([reply(200, {"user": {"id": "1", "username": "jdoe"}})])
    assert client.verify()["username"] == "jdoe"
    (req,) = transport.sent
    assert req.method == "GET" and req.url == f"{BASE}/api/3/users/me"
    assert req.headers["Api-Token"] == API_KEY
    assert req.timeout == 30.0


def test_bulk_import_sends_exactly_the_shared_encoding(make_client) -> None:
    payloads = ['{"email":"a@x.io","first_name":"A"}', '{"email":"b@x.io"}']
    client, transport = make_client(
        [reply(200, {"Success": 1, "queued_contacts": 2, "batchId": "B"})]
    )
    accepted = client.bulk_import(payloads, exclude_automations=True)
    assert accepted.batch_id == "B" and accepted.queued == 2  # "Success" capitalised: accepted
    (req,) = transport.sent
    assert req.method == "POST" and req.url.endswith("/api/3/import/bulk_import")
    assert req.body == encode_bulk_body(payloads, exclude_automations=True)
    assert req.headers["Content-Type"] == "application/json"


def test_bulk_import_without_a_batch_id_is_an_error(make_client) -> None:
    client, _ = make_client([reply(200, {"success": 0, "message": "?"})])
    with pytest.raises(FatalApiError):
        client.bulk_import(["{}", "{}"], exclude_automations=False)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"status": False, "success": [], "failure": []}, ImportStatus(None, [], [])),
        ({"status": "waiting"}, ImportStatus("waiting", [], [])),
        (
            {"status": "completed", "success": ["12", 13], "failure": ["a@x.io"]},
            ImportStatus("completed", ["12", "13"], ["a@x.io"]),
        ),
    ],
)
def test_import_info(make_client, answer, expected) -> None:
    client, transport = make_client([reply(200, answer)])
    assert client.import_info("B-1") == expected
    assert transport.sent[0].params == {"batchId": "B-1"}


def test_a_status_poll_is_a_poll_not_a_bulk_request(make_client) -> None:
    """``import/info`` draws on the limiter as a poll (placed where a push does not want the
    slot), and a 400 to it is not mistaken for the bulk throttle (which is retried)."""
    from exporter.activecampaign import RateLimiter, RequestKind

    kinds: list[RequestKind] = []

    class Seen(RateLimiter):
        def acquire(self, kind: RequestKind = RequestKind.OTHER) -> float:
            kinds.append(kind)
            return 0.0

    client, _ = make_client(
        [reply(200, {"status": "waiting"}), reply(400, {"message": "Rate limit exceeded."})],
        limiter=Seen(),
    )
    client.import_info("B-1")
    with pytest.raises(FatalApiError):
        client.import_info("B-1")
    assert kinds == [RequestKind.POLL, RequestKind.POLL]
    assert [k.bulk for k in RequestKind] == [
        k in (RequestKind.BULK_MULTI, RequestKind.BULK_SINGLE) for k in RequestKind
    ]


@pytest.mark.parametrize(
    ("collection", "method"), [("fields", "iter_fields"), ("tags", "iter_tags")]
)
def test_pages_through_every_page(make_client, collection: str, method: str) -> None:
    handler = pages(collection, 250)
    client, transport = make_client([handler] * 3)
    items = list(getattr(client, method)())
    assert [i["id"] for i in items] == [str(n) for n in range(1, 251)]
    assert [r.params["offset"] for r in transport.sent] == ["0", "100", "200"]
    assert all(r.params["limit"] == "100" for r in transport.sent)


def test_paging_follows_a_server_with_smaller_pages(make_client) -> None:
    handler = pages("fields", 45, page_size=20)
    client, transport = make_client([handler] * 3)
    assert len(list(client.iter_fields())) == 45
    assert [r.params["offset"] for r in transport.sent] == ["0", "20", "40"]


def test_paging_an_empty_collection_takes_one_request(make_client) -> None:
    client, transport = make_client([pages("tags", 0)])
    assert list(client.iter_tags()) == []
    assert len(transport.sent) == 1


def test_walks_list_members_by_ascending_id(make_client) -> None:
    members = [{"id": str(i), "email": f"m{i}@x.io"} for i in range(1, 230, 1)]

    def handle(req: Sent):  # type: ignore[no-untyped-def]
        after = int(req.params["id_greater"])
        rest = [m for m in members if int(m["id"]) > after][: int(req.params["limit"])]
        return reply(200, {"contacts": rest, "meta": {"total": str(len(rest))}})

    client, transport = make_client([handle] * 3)
    got = list(client.iter_list_members("7"))
    assert [m["id"] for m in got] == [m["id"] for m in members]
    assert [r.params["id_greater"] for r in transport.sent] == ["0", "100", "200"]
    first = transport.sent[0].params
    assert first["listid"] == "7" and first["status"] == "1" and first["orders[id]"] == "ASC"


def test_find_contact(make_client) -> None:
    client, transport = make_client(
        [reply(200, {"contacts": [{"id": "5", "email": "a@x.io"}]}), reply(200, {"contacts": []})]
    )
    assert client.find_contact("a@x.io") == {"id": "5", "email": "a@x.io"}
    assert client.find_contact("b@x.io") is None
    assert transport.sent[0].params == {"email": "a@x.io"}


def test_contact_sync_sends_camel_case(make_client) -> None:
    client, transport = make_client([reply(201, {"contact": {"id": "42", "email": "a@x.io"}})])
    contact_id = client.contact_sync("a@x.io", "Ann", "Lee", "+1 555", {"3": "Gold"})
    assert contact_id == "42"
    assert transport.sent[0].json() == {
        "contact": {
            "email": "a@x.io",
            "firstName": "Ann",
            "lastName": "Lee",
            "phone": "+1 555",
            "fieldValues": [{"field": "3", "value": "Gold"}],
        }
    }


def test_contact_sync_leaves_out_what_it_was_not_given(make_client) -> None:
    client, transport = make_client([reply(201, {"contact": {"id": "42"}})])
    client.contact_sync("a@x.io")
    assert transport.sent[0].json() == {"contact": {"email": "a@x.io"}}


@pytest.mark.parametrize("status", [1, 2])
def test_set_list_status(make_client, status: int) -> None:
    client, transport = make_client([reply(200, {"contactList": {}})])
    client.set_list_status("42", "7", status)
    assert transport.sent[0].url.endswith("/api/3/contactLists")
    assert transport.sent[0].json() == {
        "contactList": {"list": "7", "contact": "42", "status": str(status)}
    }


def test_set_list_status_refuses_other_values(make_client) -> None:
    client, transport = make_client([])
    with pytest.raises(ValueError):
        client.set_list_status("42", "7", 0)
    assert transport.sent == []


def test_logs_never_carry_the_key_or_an_email(make_client, caplog) -> None:
    client, _ = make_client([reply(503, b"<html/>"), reply(201, {"contact": {"id": "1"}})])
    with caplog.at_level(logging.DEBUG, logger="exporter"):
        client.contact_sync("jane.doe@example.com", "Jane")
    text = caplog.text
    assert caplog.records, "expected retry and debug log lines"
    assert API_KEY not in text and "jane.doe@example.com" not in text


def test_get_list_quotes_the_id(make_client) -> None:
    client, transport = make_client([reply(200, {"list": {"id": "1", "name": "N"}})])
    assert client.get_list("1")["name"] == "N"
    assert transport.sent[0].url.endswith("/api/3/lists/1")
    client2, transport2 = make_client([reply(200, {"list": {}})])
    client2.get_list("../users/me")
    assert transport2.sent[0].url.endswith("/api/3/lists/..%2Fusers%2Fme")


def test_json_body_of_sync_is_valid_json(make_client) -> None:
    client, transport = make_client([reply(201, {"contact": {"id": "1"}})])
    client.contact_sync('quote"d@x.io', 'A "B"')
    assert json.loads(transport.sent[0].body or b"")["contact"]["firstName"] == 'A "B"'


def test_close_closes_the_transport() -> None:
    class Closing(ScriptedTransport):
        closed = False

        def close(self) -> None:
            self.closed = True

    transport = Closing()
    with ActiveCampaignClient(BASE, API_KEY, transport=transport):
        pass
    assert transport.closed
