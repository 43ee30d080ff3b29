"""The caller from App Service Authentication's ``X-MS-CLIENT-PRINCIPAL`` header."""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func
import pytest

from blueprints.auth import (
    MAX_PRINCIPAL_CHARS,
    PRINCIPAL_HEADER,
    caller_from_principal,
    caller_from_request,
    principal_header,
)
from blueprints.http_util import error_response
from exporter.http_errors import Unauthenticated
from exporter.management.permissions import ADMIN, CONTRIBUTOR

ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAME_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
OID_URI = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def encode(payload: Any, *, urlsafe: bool = False, strip_padding: bool = False) -> str:
    raw = json.dumps(payload).encode()
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text.rstrip("=") if strip_padding else text


def entra_user(*roles: str, **extra: Any) -> dict[str, Any]:
    """What Easy Auth sends for a Microsoft Entra user (app roles as ``roles`` claims)."""
    claims = [
        {"typ": "aud", "val": "api://exporter"},
        {"typ": NAME_URI, "val": "ada@contoso.com"},
        {"typ": "name", "val": "Ada Lovelace"},
        {"typ": OID_URI, "val": "6f1e0a44-0000-4000-8000-000000000001"},
        {"typ": "preferred_username", "val": "ada@contoso.com"},
    ]
    claims += [{"typ": "roles", "val": role} for role in roles]
    payload = {"auth_typ": "aad", "claims": claims, "name_typ": NAME_URI, "role_typ": ROLE_URI}
    payload.update(extra)
    return payload


def req(headers: dict[str, str]) -> func.HttpRequest:
    return func.HttpRequest("GET", "https://x/api/exports", headers=headers, body=b"")


def test_an_entra_user_with_app_roles() -> None:
    caller = caller_from_principal(encode(entra_user(ADMIN, CONTRIBUTOR, "Other")))
    assert caller.principal == "ada@contoso.com"
    assert caller.roles == frozenset({ADMIN, CONTRIBUTOR, "Other"})
    assert caller.is_admin


def test_role_typ_is_honoured() -> None:
    payload = entra_user(role_typ="https://example.com/claims/app-role")
    payload["claims"].append({"typ": "https://example.com/claims/app-role", "val": CONTRIBUTOR})
    assert caller_from_principal(encode(payload)).roles == frozenset({CONTRIBUTOR})


def test_roles_under_the_long_role_uri_count_too() -> None:
    payload = entra_user()
    payload["claims"].append({"typ": ROLE_URI, "val": ADMIN})
    assert caller_from_principal(encode(payload)).is_admin


def test_name_typ_is_honoured_then_the_usual_name_claims() -> None:
    payload = entra_user(name_typ="upn")
    payload["claims"].append({"typ": "upn", "val": "ada.upn@contoso.com"})
    assert caller_from_principal(encode(payload)).principal == "ada.upn@contoso.com"
    only_display_name = {
        "auth_typ": "aad",
        "claims": [{"typ": "name", "val": "Ada Lovelace"}],
        "name_typ": NAME_URI,
    }
    assert caller_from_principal(encode(only_display_name)).principal == "Ada Lovelace"


def test_a_daemon_with_app_roles_is_named_by_its_object_id() -> None:
    payload = {
        "auth_typ": "aad",
        "claims": [
            {"typ": "appid", "val": "11111111-2222-3333-4444-555555555555"},
            {"typ": OID_URI, "val": "99999999-0000-4000-8000-000000000009"},
            {"typ": "roles", "val": ADMIN},
        ],
        "name_typ": NAME_URI,
        "role_typ": ROLE_URI,
    }
    caller = caller_from_principal(encode(payload))
    assert caller.principal == "99999999-0000-4000-8000-000000000009"
    assert caller.is_admin


def test_unpadded_and_url_safe_base64_are_accepted() -> None:
    payload = entra_user(CONTRIBUTOR)
    payload["claims"].append({"typ": "note", "val": "?>?>?>~~~"})  # '+' and '/' in base64
    for value in (encode(payload, strip_padding=True), encode(payload, urlsafe=True)):
        assert caller_from_principal(value).roles == frozenset({CONTRIBUTOR})


def test_principals_are_cleaned_and_shortened() -> None:
    payload = {"claims": [{"typ": "name", "val": " a\u0000b\n c " + "x" * 300}]}
    principal = caller_from_principal(encode(payload)).principal
    assert principal.startswith("a b c x")
    assert len(principal) == MAX_PRINCIPAL_CHARS


def test_malformed_claims_are_skipped() -> None:
    payload = {
        "claims": ["junk", {"typ": "roles"}, {"typ": 5, "val": "x"}, {"typ": "name", "val": "n"}]
    }
    caller = caller_from_principal(encode(payload))
    assert (caller.principal, caller.roles) == ("n", frozenset())


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "not base64!!",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        encode(["a", "list"]),
        encode({"auth_typ": "aad"}),
        encode({"claims": "nope"}),
        encode({"claims": [{"typ": "roles", "val": ADMIN}]}),  # roles, but nobody
        "A" * 40_000,
    ],
)
def test_invalid_principals_are_unauthenticated(value: str) -> None:
    with pytest.raises(Unauthenticated):
        caller_from_principal(value)


def test_a_request_without_the_header_is_401_with_a_challenge() -> None:
    with pytest.raises(Unauthenticated) as info:
        caller_from_request(req({}))
    resp = error_response(info.value)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(resp.get_body())["code"] == "unauthenticated"


def test_header_names_are_case_insensitive() -> None:
    value = principal_header("cy@contoso.com", [CONTRIBUTOR])
    caller = caller_from_request(req({PRINCIPAL_HEADER.lower(): value}))
    assert caller.principal == "cy@contoso.com"
    assert caller.is_contributor and not caller.is_admin


def test_the_helper_makes_what_easy_auth_sends() -> None:
    value = principal_header("ada@contoso.com", [ADMIN], role_claim=ROLE_URI, name_claim=NAME_URI)
    decoded = json.loads(base64.b64decode(value))
    assert set(decoded) == {"auth_typ", "claims", "name_typ", "role_typ"}
    assert caller_from_principal(value).is_admin
