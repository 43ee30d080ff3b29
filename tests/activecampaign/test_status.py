"""Every answer ActiveCampaign can give, through the client: which error, how many attempts,
which waits. The mapping itself lives in one place, exporter.activecampaign.status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from exporter.activecampaign.status import parse_retry_after, raise_for_status
from exporter.activecampaign.transport import Response
from exporter.errors import (
    ApiError,
    ApiNotFound,
    AuthenticationError,
    ContactsRejected,
    FatalApiError,
    RetriableApiError,
)

from .conftest import API_KEY
from .fakes import reply, reset

QUEUED = {"success": 1, "queued_contacts": 2, "batchId": "b-1", "message": "Contact import queued"}
VALIDATION = {
    "success": 0,
    "message": "JSON payload did not pass validation.",
    "failureReasons": [{"contact": 2, "failureReason": "Field 'email' incorrect format"}],
}
BULK_THROTTLE = {
    "success": 0,
    "message": "Rate limit exceeded.",
    "failureReasons": ["Up to 100 imports may be requested per minute."],
}
HTML_503 = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
TIMEOUT = RetriableApiError("POST /api/3/import/bulk_import: no answer within 30s")

# (id, answer repeated for every attempt, expected error or None, attempts, waits between)
CASES = [
    ("200", reply(200, QUEUED), None, 1, []),
    ("400-validation", reply(400, VALIDATION), ContactsRejected, 1, []),
    # The bulk throttle says "retry this request in a minute": so we do.
    ("400-bulk-rate-limit", reply(400, BULK_THROTTLE), RetriableApiError, 3, [60.0, 60.0]),
    ("400-other", reply(400, {"success": 0, "message": "bad"}), FatalApiError, 1, []),
    ("401", reply(401, {"message": "Unauthorized"}), AuthenticationError, 1, []),
    ("403", reply(403, {"message": "Forbidden"}), AuthenticationError, 1, []),
    ("404", reply(404, {"message": "No Result found"}), ApiNotFound, 1, []),
    ("422", reply(422, {"errors": [{"title": "dup", "code": "duplicate"}]}), FatalApiError, 1, []),
    ("429-retry-after", reply(429, {}, {"Retry-After": "7"}), RetriableApiError, 3, [7.0, 7.0]),
    ("429-no-retry-after", reply(429, {}), RetriableApiError, 3, [1.0, 2.0]),
    ("500", reply(500, {"message": "oops"}), RetriableApiError, 3, [1.0, 2.0]),
    ("502", reply(502, b"Bad Gateway"), RetriableApiError, 3, [1.0, 2.0]),
    ("503-html", reply(503, HTML_503), RetriableApiError, 3, [1.0, 2.0]),
    (
        "503-retry-after",
        reply(503, HTML_503, {"retry-after": "4"}),
        RetriableApiError,
        3,
        [4.0, 4.0],
    ),
    ("connection-reset", reset(), RetriableApiError, 3, [1.0, 2.0]),
    ("timeout", TIMEOUT, RetriableApiError, 3, [1.0, 2.0]),
]


@pytest.mark.parametrize(
    ("answer", "expected", "attempts", "waits"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_bulk_import_answer(make_client, clock, answer, expected, attempts, waits) -> None:
    client, transport = make_client([answer] * 3)
    if expected is None:
        accepted = client.bulk_import(
            ['{"email":"a@x.io"}', '{"email":"b@x.io"}'], exclude_automations=True
        )
        assert accepted.batch_id == "b-1" and accepted.queued == 2
    else:
        with pytest.raises(expected) as info:
            client.bulk_import(
                ['{"email":"a@x.io"}', '{"email":"b@x.io"}'], exclude_automations=True
            )
        assert type(info.value) is expected
        assert API_KEY not in str(info.value) and "a@x.io" not in str(info.value)
    assert len(transport.sent) == attempts
    assert clock.sleeps == waits


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (reply(403, {"message": "Forbidden"}), AuthenticationError),
        (reply(404, {"message": "No Result found for _List with id 9"}), ApiNotFound),
        (reply(422, {"errors": [{"title": "bad"}]}), FatalApiError),
        (reply(500), RetriableApiError),
        (reply(429), RetriableApiError),
        # Outside bulk import a 400 is never the bulk throttle or a contact rejection.
        (reply(400, BULK_THROTTLE), FatalApiError),
        (reply(400, VALIDATION), FatalApiError),
    ],
)
def test_get_answers_map_the_same_way(make_client, answer, expected) -> None:
    client, transport = make_client([answer] * 3)
    with pytest.raises(expected) as info:
        client.get_list("9")
    assert type(info.value) is expected
    retried = issubclass(expected, RetriableApiError)
    assert len(transport.sent) == (3 if retried else 1)


def test_retry_then_success_returns_the_answer(make_client, clock) -> None:
    client, transport = make_client(
        [reply(503, HTML_503), reply(429, {}, {"Retry-After": "3"}), reply(200, QUEUED)]
    )
    accepted = client.bulk_import(['{"email":"a@x.io"}'] * 2, exclude_automations=False)
    assert accepted.batch_id == "b-1"
    assert clock.sleeps == [1.0, 3.0]
    # The same bytes every time: a replay of one idempotent upsert.
    assert len({r.body for r in transport.sent}) == 1


def test_404_keeps_the_servers_message(make_client) -> None:
    client, _ = make_client([reply(404, {"message": "No Result found for _List with id 9"})])
    with pytest.raises(ApiNotFound, match="No Result found for _List with id 9"):
        client.get_list("9")


def test_403_says_the_key_was_rejected(make_client) -> None:
    client, _ = make_client([reply(403, {"message": "Forbidden"})])
    with pytest.raises(AuthenticationError, match="API key rejected") as info:
        client.verify()
    assert info.value.status == 403


def test_validation_400_converts_positions_to_zero_based(make_client) -> None:
    body = {
        "success": 0,
        "message": "JSON payload did not pass validation.",
        "failureReasons": [
            {"contact": 1, "failureReason": "Field 'email' incorrect format"},
            {"contact": "3", "failureReason": "too long"},
        ],
    }
    client, _ = make_client([reply(400, body)])
    with pytest.raises(ContactsRejected) as info:
        client.bulk_import(["{}", "{}", "{}"], exclude_automations=False)
    assert [(r.index, r.reason) for r in info.value.rejected] == [
        (0, "Field 'email' incorrect format"),
        (2, "too long"),
    ]


def test_error_messages_mask_emails_and_never_quote_the_key() -> None:
    body = {"errors": [{"title": f"jane.doe@example.com exists; token {API_KEY}"}]}
    response = Response(422, {}, json.dumps(body).encode())
    with pytest.raises(FatalApiError) as info:
        raise_for_status(response, method="POST", path="/contact/sync", secrets=(API_KEY,))
    text = str(info.value)
    assert "jane.doe@example.com" not in text and "j***@e***.com" in text
    assert API_KEY not in text
    assert "422" in text and "/contact/sync" in text


def test_long_server_text_is_truncated() -> None:
    response = Response(422, {}, json.dumps({"message": "x" * 5000}).encode())
    with pytest.raises(FatalApiError) as info:
        raise_for_status(response, method="GET", path="/x")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_is_success(status: int) -> None:
    raise_for_status(Response(status, {}, b""), method="GET", path="/x")


def test_non_json_success_is_a_fatal_error(make_client) -> None:
    client, _ = make_client([reply(200, b"<html>maintenance</html>")])
    with pytest.raises(FatalApiError, match="not JSON"):
        client.verify()


def test_all_api_errors_share_the_root() -> None:
    for cls in (AuthenticationError, ApiNotFound, RetriableApiError, ContactsRejected):
        assert issubclass(cls, ApiError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("30", 30.0),
        ("0.25", 0.25),
        ("-5", 0.0),
        ("soon", None),
        (format_datetime(datetime.fromtimestamp(1_000_045, UTC), usegmt=True), 45.0),
        (format_datetime(datetime.fromtimestamp(999_000, UTC), usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000.0) == expected


def test_retry_after_as_http_date_is_honoured(make_client, clock) -> None:
    when = format_datetime(datetime.fromtimestamp(1_000_010, UTC), usegmt=True)
    client, _ = make_client(
        [reply(429, {}, {"Retry-After": when}), reply(200, {"user": {}})],
        wall_clock=lambda: 1_000_000.0,
    )
    client.verify()
    assert clock.sleeps == [10.0]
