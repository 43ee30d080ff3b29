"""Reading JSON requests and writing JSON answers and errors."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from blueprints.http_util import (
    error_response,
    etag_headers,
    if_match,
    if_none_match_any,
    json_response,
    query_flag,
    read_json_body,
    route_name,
)
from exporter.errors import (
    ApiError,
    ApiNotFound,
    AuthenticationError,
    ConfigError,
    ConfigErrors,
    ConflictError,
    NotFoundError,
    PermissionDenied,
    RetriableApiError,
    RunConflict,
    SecretError,
)
from exporter.http_errors import PayloadTooLarge, UnsupportedMediaType

JSON = {"Content-Type": "application/json"}


def req(
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    route: dict[str, str] | None = None,
) -> func.HttpRequest:
    return func.HttpRequest(
        "PUT",
        "https://x/api/connections/a",
        headers=headers if headers is not None else JSON,
        params=params or {},
        route_params=route or {},
        body=body,
    )


def answer(resp: func.HttpResponse) -> Any:
    return json.loads(resp.get_body())


# --- read_json_body -----------------------------------------------------------------------------


def test_a_json_object_is_read() -> None:
    body = '{"display_name": "Café", "n": 1}'.encode()
    assert read_json_body(req(body)) == {"display_name": "Café", "n": 1}
    with_charset = {"Content-Type": "application/json; charset=utf-8"}
    assert read_json_body(req(b"\xef\xbb\xbf{}", with_charset)) == {}  # BOM tolerated


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{}", {}),
        (b"{}", {"Content-Type": "text/plain"}),
        (b"{}", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"a=1", {"Content-Type": "multipart/form-data; boundary=x"}),
    ],
)
def test_only_json_is_accepted(body: bytes, headers: dict[str, str]) -> None:
    with pytest.raises(UnsupportedMediaType):
        read_json_body(req(body, headers))
    with pytest.raises(UnsupportedMediaType) as info:
        read_json_body(req(body, headers))
    assert error_response(info.value).status_code == 415


def test_bodies_over_the_limit_are_413() -> None:
    big = json.dumps({"x": "y" * 100}).encode()
    with pytest.raises(PayloadTooLarge):
        read_json_body(req(big), max_bytes=100)
    declared = dict(JSON, **{"Content-Length": "999999"})
    with pytest.raises(PayloadTooLarge) as info:
        read_json_body(req(b"{}", declared))
    assert error_response(info.value).status_code == 413
    assert read_json_body(req(b"{}" + b" " * 98), max_bytes=100) == {}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"api_key": "SECRET-123", ', "line 1"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b"[1, 2]", "object"),
        (b'"text"', "object"),
        (b"[" * 50_000 + b"]" * 50_000, "nested"),
    ],
)
def test_bad_bodies_are_400_without_echoing_them(body: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_json_body(req(body), max_bytes=200_000)
    assert fragment in str(info.value)
    assert "SECRET" not in str(info.value)
    assert error_response(info.value).status_code == 400


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        read_json_body(req(b'{"api_key": "a", "api_key": "b"}'))
    assert info.value.field == "api_key"
    with pytest.raises(ConfigError) as odd:
        read_json_body(req(b'{"SECRET-VALUE 1": 1, "SECRET-VALUE 1": 2}'))
    assert odd.value.field is None
    assert "SECRET" not in str(odd.value)


# --- small request helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [(None, False), ("", True), ("true", True), ("1", True), ("FALSE", False), ("0", False)],
)
def test_query_flags(raw: str | None, value: bool) -> None:
    params = {} if raw is None else {"force": raw}
    assert query_flag(req(params=params), "force") is value


def test_a_bad_query_flag_names_the_parameter() -> None:
    with pytest.raises(ConfigError) as info:
        query_flag(req(params={"force": "maybe"}), "force")
    assert info.value.field == "force"


def test_route_names() -> None:
    assert route_name(req(route={"name": "shop"})) == "shop"
    with pytest.raises(ConfigError):
        route_name(req())


def test_etags_round_trip() -> None:
    assert etag_headers('"abc"') == {"ETag": '"abc"'}
    assert etag_headers("abc") == {"ETag": '"abc"'}
    assert if_match(req(headers={"If-Match": '"abc"'})) == '"abc"'
    assert if_match(req(headers={"If-Match": "abc"})) == '"abc"'
    assert if_match(req(headers={"If-Match": "*"})) == "*"
    assert if_match(req(headers={})) is None
    assert if_none_match_any(req(headers={"If-None-Match": "*"}))
    assert not if_none_match_any(req(headers={}))
    with pytest.raises(ConfigError):
        if_none_match_any(req(headers={"If-None-Match": '"abc"'}))


# --- answers --------------------------------------------------------------------------------------


def test_json_answers_are_never_cached() -> None:
    resp = json_response({"a": "é"}, 201, headers={"ETag": '"1"'})
    assert resp.status_code == 201
    assert resp.mimetype == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["ETag"] == '"1"'
    assert answer(resp) == {"a": "é"}


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ConfigError("bad", field="hostname"), 400, "invalid"),
        (NotFoundError("no connection named 'x'", field="name"), 404, "not_found"),
        (ConflictError("exists already", field="name"), 409, "conflict"),
        (RunConflict("already running"), 409, "conflict"),
        (PermissionDenied("no"), 403, "forbidden"),
        (SecretError("vault said no"), 502, "secret_unavailable"),
        (AuthenticationError("key rejected", status=403), 422, "activecampaign_key_rejected"),
        (ApiNotFound("gone", status=404), 502, "activecampaign_error"),
        (ApiError("odd", status=418), 502, "activecampaign_error"),
        (RetriableApiError("busy", status=503, retry_after=2.4), 503, "activecampaign_unavailable"),
        (ValueError("boom"), 500, "internal"),
    ],
)
def test_each_error_has_its_status(exc: Exception, status: int, code: str) -> None:
    resp = error_response(exc)
    assert resp.status_code == status
    assert answer(resp)["code"] == code
    assert isinstance(answer(resp)["errors"], list)


def test_field_errors_are_listed_one_by_one() -> None:
    exc = ConfigErrors(
        [
            ConfigError("is required", field="hostname"),
            ConfigErrors([ConfigError("unknown field", field="colour")]),
            ConfigError("expected a JSON object"),
        ]
    )
    assert answer(error_response(exc))["errors"] == [
        {"field": "hostname", "message": "is required"},
        {"field": "colour", "message": "unknown field"},
        {"field": None, "message": "expected a JSON object"},
    ]


def test_conditional_requests_turn_conflicts_into_412() -> None:
    assert (
        error_response(ConflictError("changed", field="name"), conditional=True).status_code == 412
    )
    assert error_response(NotFoundError("gone", field="name"), conditional=True).status_code == 412
    assert error_response(ConfigError("bad", field="x"), conditional=True).status_code == 400


def test_retry_after_is_passed_on() -> None:
    resp = error_response(RetriableApiError("busy", status=429, retry_after=2.4))
    assert resp.headers["Retry-After"] == "2"


def test_foreign_errors_keep_their_text_out_of_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    resp = error_response(RuntimeError("password=hunter2"))
    assert "hunter2" not in resp.get_body().decode()
    assert any(r.levelname == "ERROR" for r in caplog.records)
