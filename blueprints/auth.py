"""Who is calling: the caller from App Service Authentication's client principal header.

The management API runs with function keys *and* App Service Authentication (Easy Auth) in
front of it. Easy Auth validates the caller's token and passes its claims to the app as
``X-MS-CLIENT-PRINCIPAL``: base64-encoded JSON of the documented shape::

    {"auth_typ": "aad",
     "claims": [{"typ": "roles", "val": "Exporter.Admin"}, {"typ": "name", "val": "..."}],
     "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
     "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}

Easy Auth strips this header from incoming requests, so only it can set the header, *provided
authentication is enabled on the app* (the deployment does that; without it anyone holding a
function key could forge the header). Roles are read from claims of type ``role_typ`` and of
the usual role types, because Microsoft Entra's app roles arrive as ``roles`` claims even when
``role_typ`` names the long URI. The principal is the claim named by ``name_typ``, else the user
name, else the object or application id (a daemon calling with app roles has no user name).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import azure.functions as func

from exporter.http_errors import Unauthenticated
from exporter.management.permissions import Caller
from exporter.settings import FunctionSettings

log = logging.getLogger(__name__)

PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
"""The header App Service Authentication sets (and strips from incoming requests)."""
MAX_HEADER_CHARS = 32_000
"""A principal with hundreds of group claims is ~20 KB; beyond this it is not Easy Auth's."""
MAX_PRINCIPAL_CHARS = 200
"""Principals are recorded as ``created_by``/consent ``by`` (at most 200 characters there)."""

ROLE_CLAIM_TYPES = (
    "roles",
    "role",
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
)
"""Claim types that carry app roles, besides the principal's own ``role_typ``."""
NAME_CLAIM_TYPES = (
    "preferred_username",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
    "upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "email",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "name",
)
"""Claim types tried, in order, for a readable principal after ``name_typ``."""
ID_CLAIM_TYPES = (
    "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "oid",
    "appid",
    "azp",
    "sub",
)
"""Claim types tried for an identifier when the principal has no user name (daemon apps)."""


def _decode(value: str) -> Mapping[str, Any]:
    text = value.strip()
    if not text:
        raise Unauthenticated(f"the {PRINCIPAL_HEADER} header is empty")
    if len(text) > MAX_HEADER_CHARS:
        raise Unauthenticated(f"the {PRINCIPAL_HEADER} header is too large")
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        raise Unauthenticated(f"the {PRINCIPAL_HEADER} header is not base64-encoded JSON") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("claims"), list):
        raise Unauthenticated(f"the {PRINCIPAL_HEADER} header has no claims")
    return data


def _claims(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for claim in data["claims"]:
        if not isinstance(claim, Mapping):
            continue
        typ, val = claim.get("typ"), claim.get("val")
        if isinstance(typ, str) and isinstance(val, str) and val.strip():
            out.append((typ, val.strip()))
    return out


def _first(claims: list[tuple[str, str]], types: Iterable[str]) -> str | None:
    for wanted in types:
        for typ, val in claims:
            if typ == wanted:
                return val
    return None


def _clean(principal: str) -> str:
    printable = "".join(ch if ch.isprintable() else " " for ch in principal)
    return " ".join(printable.split())[:MAX_PRINCIPAL_CHARS]


def caller_from_principal(value: str) -> Caller:
    """The caller described by an ``X-MS-CLIENT-PRINCIPAL`` value.

    Raises :class:`Unauthenticated` when the value cannot be decoded or names nobody. A caller
    without exporter roles is returned as such: the service answers it with 403.
    """
    data = _decode(value)
    claims = _claims(data)
    role_typ = data.get("role_typ")
    role_types = {*ROLE_CLAIM_TYPES, *([role_typ] if isinstance(role_typ, str) else [])}
    roles = frozenset(val for typ, val in claims if typ in role_types)
    name_typ = data.get("name_typ")
    name_types = ([name_typ] if isinstance(name_typ, str) else []) + list(NAME_CLAIM_TYPES)
    principal = _first(claims, name_types) or _first(claims, ID_CLAIM_TYPES)
    principal = _clean(principal or "")
    if not principal:
        raise Unauthenticated(f"the {PRINCIPAL_HEADER} header names no user or application")
    return Caller(principal=principal, roles=roles)


def require_trusted_principal(settings: FunctionSettings) -> None:
    """Refuse (401) when the principal header cannot be believed: App Service Authentication
    is off, so anyone with a function key could forge ``X-MS-CLIENT-PRINCIPAL``."""
    if not settings.principal_header_trusted:
        raise Unauthenticated(
            "App Service Authentication is not enabled on this app, so callers cannot be "
            "identified; enable Microsoft Entra sign-in (see docs/deploy.md)"
        )


def caller_from_request(req: func.HttpRequest) -> Caller:
    """The caller of a request, from App Service Authentication's principal header.

    Raises :class:`Unauthenticated` (401) when the header is missing or invalid.
    """
    value = req.headers.get(PRINCIPAL_HEADER)
    if value is None:
        raise Unauthenticated(
            "sign in: the request carries no App Service Authentication principal "
            f"({PRINCIPAL_HEADER})"
        )
    caller = caller_from_principal(value)
    log.debug("caller has %d exporter-relevant role(s)", len(caller.roles))
    return caller


def principal_header(
    name: str,
    roles: Iterable[str] = (),
    *,
    role_claim: str = "roles",
    name_claim: str = "name",
    auth_typ: str = "aad",
) -> str:
    """An ``X-MS-CLIENT-PRINCIPAL`` value as Easy Auth would send it (tests and local tools)."""
    claims = [{"typ": name_claim, "val": name}]
    claims += [{"typ": role_claim, "val": role} for role in roles]
    payload = {
        "auth_typ": auth_typ,
        "claims": claims,
        "name_typ": name_claim,
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    }
    return base64.b64encode(json.dumps(payload).encode()).decode("ascii")
