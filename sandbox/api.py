"""The API v3 endpoints: what each request is answered, in the order ActiveCampaign decides it.

For a request under ``/api/3``:

1. ``Api-Token`` is checked first: a missing or wrong key is answered 403
   ``{"message":"Forbidden"}`` and neither counted nor charged to any budget (the key is how
   the account is known).
2. It is counted, and the seeded fault generator may answer it instead (reset, 503 page, forced
   429) or late.
3. The account budget (5 per sandbox second) is charged: over it, 429 with ``Retry-After``.
   Throttled requests are not charged.
4. The endpoint runs. Bulk import charges its own per-minute budget (multi- or single-contact),
   after the size check (413) and the JSON parse, before contact validation: so a request
   rejected for a bad contact has used its slot.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox import bulk, shapes
from sandbox.account import ACTIVE, UNSUBSCRIBED, Account, Contact
from sandbox.bulk import Importer
from sandbox.config import SandboxConfig
from sandbox.meter import HTTP_429, HTTP_503, LOST_RESPONSE, RESET, Meter

API_PREFIX = "/api/3"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100

_HTML_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"
)
_FORBIDDEN = b'{"message":"Forbidden"}'


@dataclass
class Response:
    """What to send back. ``reset`` means: send nothing, reset the connection."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False


def json_response(status: int, obj: object, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (compact, UTF-8)."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, headers=headers or {})


def retry_after_text(seconds: float, time_scale: float) -> str:
    """``Retry-After`` value: whole seconds (at least 1) at real speed; with a time scale,
    a decimal number of real seconds with millisecond precision (clients must parse floats)."""
    if time_scale == 1.0:
        return str(max(1, math.ceil(seconds)))
    return f"{max(seconds, 0.001):.3f}"


@dataclass
class Call:
    """One parsed API request."""

    method: str
    path: str
    """The path below ``/api/3``."""
    query: dict[str, str]
    body: bytes
    base: str
    """``http://host:port`` as the client addressed us (for ``links``)."""
    params: tuple[str, ...] = ()
    arrived: float | None = None
    """When the request arrived (sandbox clock); budgets are charged at this time."""


Handler = Callable[["Api", Call], Response]
_ROUTES: list[tuple[str, str, re.Pattern[str], Handler]] = []


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register an endpoint under the key ``"METHOD /template"``."""
    pattern = re.compile("^" + re.sub(r"\{[a-z]+\}", "([^/]+)", template) + "$")

    def register(fn: Handler) -> Handler:
        _ROUTES.append((method, template, pattern, fn))
        return fn

    return register


def match(method: str, path: str) -> tuple[str, Handler | None, tuple[str, ...]]:
    """(endpoint key, handler or None, path parameters)."""
    for m, template, pattern, fn in _ROUTES:
        if m == method and (found := pattern.match(path)):
            return f"{m} {template}", fn, found.groups()
    return f"{method} (unknown)", None, ()


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _page(call: Call) -> tuple[int, int]:
    limit = _int(call.query.get("limit"), DEFAULT_LIMIT)
    limit = DEFAULT_LIMIT if limit < 1 else min(limit, MAX_LIMIT)
    return limit, max(_int(call.query.get("offset"), 0), 0)


def _errors(status: int, title: str, code: str, pointer: str) -> Response:
    return json_response(
        status,
        {"errors": [{"title": title, "detail": "", "code": code, "source": {"pointer": pointer}}]},
    )


def _bulk_error(status: int, message: str, reasons: list[object]) -> Response:
    return json_response(status, {"success": 0, "message": message, "failureReasons": reasons})


class Api:
    """One sandbox account's API: state, budgets, faults and the request pipeline."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.account = Account(config)
        self.meter = Meter(config)
        self.importer = Importer(self.account, self.meter, config.clock, config.time_scale)
        self._key = config.api_key.encode()

    def authorised(self, token: str | None) -> bool:
        """Whether the ``Api-Token`` header carries the account's key."""
        return token is not None and hmac.compare_digest(token.encode(), self._key)

    def handle(
        self,
        method: str,
        target: str,
        token: str | None,
        body: bytes,
        base: str,
        arrived: float | None = None,
    ) -> Response:
        """Answer one request whose target starts with ``/api/3``. ``arrived``: when its first
        line came in (default: now). ActiveCampaign counts a request when it arrives, so every
        budget is charged at that moment, not after the body was read and parsed (which, on a
        busy machine, can be much later and would bunch requests the client spaced out)."""
        now = self.clock() if arrived is None else arrived
        if not self.authorised(token):
            return Response(403, _FORBIDDEN)
        parts = urlsplit(target)
        path = parts.path[len(API_PREFIX) :] or "/"
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        key, handler, params = match(method, path)
        decision = self.meter.arrive(key, len(body), now)
        if decision.slow:
            time.sleep(self.meter.faults.slow_seconds)
        if decision.kind == RESET:
            return Response(0, reset=True)
        if decision.kind == HTTP_503:
            return Response(503, _HTML_503, "text/html")
        scale = self.config.time_scale
        if decision.kind == HTTP_429:
            wait = self.meter.faults.retry_after / scale
            return self._throttled(wait)
        if decision.slow:
            now = self.clock()  # a slow request is charged after its delay, as before
        over, remaining = self.meter.admit(now)
        if over is not None:
            return self._throttled(over)
        if handler is None:
            response = json_response(404, {"message": "Not Found"})
        else:
            response = handler(self, Call(method, path, query, body, base, params, now))
        response.headers["RateLimit-Limit"] = str(self.meter.rate_limit)
        response.headers["RateLimit-Remaining"] = str(remaining)
        if decision.kind == LOST_RESPONSE:
            return Response(0, reset=True)
        return response

    def _throttled(self, wait: float) -> Response:
        headers = {
            "Retry-After": retry_after_text(wait, self.config.time_scale),
            "RateLimit-Limit": str(self.meter.rate_limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": retry_after_text(wait, self.config.time_scale),
        }
        return json_response(
            429, {"message": "Too Many Requests. Please try again later."}, headers
        )


# -- bulk import ------------------------------------------------------------------------------


@route("POST", "/import/bulk_import")
def bulk_import(api: Api, call: Call) -> Response:
    """Validate, charge the bulk budget, queue."""
    if len(call.body) >= bulk.MAX_BODY_BYTES:
        return _bulk_error(
            413,
            "Request body too large. The import was not queued for processing.",
            [f"The request body must be smaller than {bulk.MAX_BODY_BYTES} bytes."],
        )
    try:
        payload = json.loads(call.body)
    except (ValueError, UnicodeDecodeError):
        return _bulk_error(400, bulk.VALIDATION_MESSAGE, ["Request body is not valid JSON."])
    contacts = payload.get("contacts") if isinstance(payload, dict) else None
    if not isinstance(contacts, list) or not contacts:
        return _bulk_error(400, bulk.VALIDATION_MESSAGE, ["'contacts' is a required field."])
    single = len(contacts) == 1
    arrived = api.clock() if call.arrived is None else call.arrived
    if not api.meter.admit_bulk(arrived, single=single):
        reason = (
            "Up to 20 single-contact imports may be requested per minute."
            if single
            else "Up to 100 imports may be requested per minute."
        )
        return _bulk_error(
            400,
            "Rate limit exceeded.",
            [
                reason
                + "Please batch contacts into larger requests, or retry this request in a minute."
            ],
        )
    if len(contacts) > bulk.MAX_CONTACTS:
        return _bulk_error(
            400,
            bulk.VALIDATION_MESSAGE,
            [f"Up to {bulk.MAX_CONTACTS} contacts may be included in a single request."],
        )
    exclude = payload.get("exclude_automations", False)
    if not isinstance(exclude, bool):
        return _bulk_error(
            400, bulk.VALIDATION_MESSAGE, ["'exclude_automations' must be a boolean."]
        )
    reasons: list[object] = []
    check, account = bulk.check_contact, api.account
    for n, contact in enumerate(contacts, start=1):
        problem = check(contact, account)
        if problem is not None:
            reasons.append({"contact": n, "failureReason": problem})
    if reasons:
        return _bulk_error(400, bulk.VALIDATION_MESSAGE, reasons)
    batch = api.importer.queue(contacts, exclude)
    return json_response(
        200,
        {
            "success": 1,
            "queued_contacts": batch.size,
            "batchId": batch.id,
            "message": "Contact import queued",
        },
    )


@route("GET", "/import/bulk_import")
def bulk_summary(api: Api, call: Call) -> Response:
    """Batches per day: ``outstanding`` and ``recentlyCompleted`` (counts as strings)."""
    return json_response(200, api.importer.summary())


@route("GET", "/import/info")
def import_info(api: Api, call: Call) -> Response:
    """The batch's status (``false`` at first), new contact ids and failed emails."""
    batch_id = call.query.get("batchId")
    if not batch_id:
        return json_response(400, {"success": 0, "message": "'batchId' is a required field."})
    status, success, failure = api.importer.info(batch_id)
    return json_response(200, {"status": status, "success": success, "failure": failure})


# -- single contacts --------------------------------------------------------------------------


def _wrapped_object(call: Call, key: str, missing: str) -> dict[str, Any] | Response:
    """The object under ``key`` of a single-resource body (``{"contact": {...}}``), or the
    error answer ActiveCampaign gives for bad JSON (400) or a missing object (422)."""
    try:
        payload = json.loads(call.body)
    except (ValueError, UnicodeDecodeError):
        return _errors(400, "Request body is not valid JSON.", "invalid_json", "/data")
    data = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return _errors(422, missing, "field_missing", "/data/attributes")
    return data


_SYNC_KEYS = frozenset(
    {"email", "firstName", "lastName", "phone", "fieldValues", "orgid", "deleted"}
)


@route("POST", "/contact/sync")
def contact_sync(api: Api, call: Call) -> Response:
    """Upsert one contact by email (camelCase body): 201 when created, 200 when updated."""
    data = _wrapped_object(call, "contact", "Contact is required")
    if not isinstance(data, dict):
        return data
    email = data.get("email")
    if not email:
        return _errors(422, "Contact Email is required", "field_missing", "/data/attributes/email")
    if not isinstance(email, str) or not bulk.email_syntax_ok(email):
        return _errors(
            422, "Email address is not valid.", "email_invalid", "/data/attributes/email"
        )
    for key in ("firstName", "lastName", "phone"):
        if key in data and not isinstance(data[key], str):
            return _errors(
                422, f"{key} must be a string", "field_invalid", f"/data/attributes/{key}"
            )
    values: list[tuple[str, str]] = []
    raw_values = data.get("fieldValues", [])
    if not isinstance(raw_values, list):
        return _errors(
            422, "fieldValues must be an array", "field_invalid", "/data/attributes/fieldValues"
        )
    for i, item in enumerate(raw_values):
        pointer = f"/data/attributes/fieldValues/{i}/field"
        field_id = bulk._ident(item.get("field")) if isinstance(item, dict) else None
        if field_id is None or field_id not in api.account.fields:
            return _errors(422, "The related field does not exist.", "related_missing", pointer)
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return _errors(422, "Field value is not valid.", "field_invalid", pointer)
        values.append((field_id, str(value)))
    account = api.account
    names = {
        snake: data[camel]
        for camel, snake in (
            ("firstName", "first_name"),
            ("lastName", "last_name"),
            ("phone", "phone"),
        )
        if camel in data
    }
    with account.lock:
        for key in data:
            if key not in _SYNC_KEYS:
                account.ignored_keys[f"contact_sync:{key}"] += 1
        contact, created = account.sync_contact(email.lower(), names, values)
        body = shapes.synced_contact(contact, call.base)
    return json_response(201 if created else 200, body)


@route("POST", "/contactLists")
def contact_lists(api: Api, call: Call) -> Response:
    """Set a contact's status on a list: 1 subscribes (and does re-subscribe), 2 unsubscribes."""
    data = _wrapped_object(call, "contactList", "contactList is required")
    if not isinstance(data, dict):
        return data
    list_id = bulk._ident(data.get("list"))
    contact_id = bulk._ident(data.get("contact"))
    status = _int(str(data.get("status")), -1) if data.get("status") is not None else -1
    account = api.account
    with account.lock:
        if list_id is None or list_id not in account.lists:
            return _errors(
                422, "The related list does not exist.", "related_missing", "/data/attributes/list"
            )
        contact = account.by_id(int(contact_id)) if contact_id else None
        if contact is None:
            return _errors(
                422,
                "The related contact does not exist.",
                "related_missing",
                "/data/attributes/contact",
            )
        if status == ACTIVE:
            account.subscribe(contact.id, list_id, resubscribe=True)
        elif status == UNSUBSCRIBED:
            account.unsubscribe(contact.id, list_id, force=True)
        else:
            return _errors(422, "Status is not valid.", "field_invalid", "/data/attributes/status")
        body = {
            "contacts": [shapes.contact(contact, call.base)],
            "contactList": shapes.contact_list(
                contact, list_id, status, call.base, status_as_int=True
            ),
        }
    return json_response(200, body)


@route("GET", "/contacts")
def contacts(api: Api, call: Call) -> Response:
    """Contacts, filtered by ``email``, ``listid`` (+ ``status``), ``id_greater``; ordered by
    ``orders[id]`` (default: newest first, i.e. id descending)."""
    limit, offset = _page(call)
    q = call.query
    list_id = q.get("listid") or None
    status = _int(q.get("status"), -1) if q.get("status") not in (None, "") else None
    if status is not None and status < 0:
        status = None
    descending = q.get("orders[id]", "DESC").upper() != "ASC"
    updated_after, bad = _utc_stamp(q.get("filters[updated_after]"))
    if bad:
        return json_response(
            400, {"errors": [{"title": "Invalid date", "detail": "filters[updated_after]"}]}
        )
    account = api.account
    with account.lock:
        if list_id is not None and list_id not in account.lists:
            found: list[Contact] = []
            total = 0
        else:
            found, total = account.query(
                email=q.get("email") or None,
                list_id=list_id,
                status=status,
                id_greater=_int(q.get("id_greater"), 0),
                updated_after=updated_after,
                descending=descending,
                offset=offset,
                limit=limit,
            )
        items = [shapes.contact(c, call.base) for c in found]
    meta = {
        "total": str(total),
        "page_input": shapes.page_input(list_id=list_id, status=status, limit=limit, offset=offset),
    }
    return json_response(200, {"scoreValues": [], "contacts": items, "meta": meta})


def _utc_stamp(value: str | None) -> tuple[str | None, bool]:
    """A ``filters[…]`` date or date-time (any offset; none means the account's time zone,
    UTC here) as a UTC stamp comparable with the contacts' dates; ``(None, True)`` if invalid."""
    if value in (None, ""):
        return None, False
    try:
        parsed = datetime.fromisoformat(str(value).replace(" ", "T"))
    except ValueError:
        return None, True
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).replace(microsecond=0).isoformat(), False


def _contact_or_404(api: Api, call: Call) -> tuple[object, Response | None]:
    raw = call.params[0]
    contact = api.account.by_id(int(raw)) if raw.isdigit() else None
    if contact is None:
        return None, json_response(
            404, {"message": f"No Result found for Subscriber with id {raw}"}
        )
    return contact, None


@route("GET", "/contacts/{id}")
def contact_detail(api: Api, call: Call) -> Response:
    """One contact with its list memberships, field values and tags."""
    with api.account.lock:
        contact, missing = _contact_or_404(api, call)
        if missing is not None:
            return missing
        body = shapes.contact_detail(contact, api.account, call.base)  # type: ignore[arg-type]
    return json_response(200, body)


@route("GET", "/contacts/{id}/contactLists")
def contact_memberships(api: Api, call: Call) -> Response:
    """One contact's list memberships."""
    with api.account.lock:
        contact, missing = _contact_or_404(api, call)
        if missing is not None:
            return missing
        statuses = api.account.statuses(contact)  # type: ignore[arg-type]
        items = [
            shapes.contact_list(contact, list_id, status, call.base)  # type: ignore[arg-type]
            for list_id, status in statuses.items()
        ]
    return json_response(200, {"contactLists": items})


# -- account objects ----------------------------------------------------------------------------


def _paged(items: list[dict[str, object]], call: Call, name: str, **extra: object) -> Response:
    limit, offset = _page(call)
    return json_response(
        200, {**extra, name: items[offset : offset + limit], "meta": {"total": str(len(items))}}
    )


@route("GET", "/lists")
def lists(api: Api, call: Call) -> Response:
    """The account's lists, by id."""
    items = [
        shapes.mailing_list(list_id, name, cdate, call.base)
        for list_id, (name, cdate) in sorted(api.account.lists.items(), key=lambda kv: int(kv[0]))
    ]
    wanted = call.query.get("filters[name]")
    if wanted:
        items = [i for i in items if i["name"] == wanted]
    return _paged(items, call, "lists")


@route("GET", "/lists/{id}")
def one_list(api: Api, call: Call) -> Response:
    """One list, or 404 ``No Result found for _List with id N``."""
    list_id = call.params[0]
    found = api.account.lists.get(list_id)
    if found is None:
        return json_response(404, {"message": f"No Result found for _List with id {list_id}"})
    return json_response(200, {"list": shapes.mailing_list(list_id, found[0], found[1], call.base)})


@route("GET", "/fields")
def fields(api: Api, call: Call) -> Response:
    """The account's custom fields (``filters[perstag]`` narrows by personalisation tag)."""
    cdate = next(iter(api.account.lists.values()), ("", api.account.stamp()))[1]
    chosen = list(api.account.fields.values())
    wanted = call.query.get("filters[perstag]")
    if wanted:
        chosen = [f for f in chosen if f.perstag == wanted]
    items = [shapes.custom_field(f, n, cdate, call.base) for n, f in enumerate(chosen, 1)]
    rels = [
        {"field": f.id, "relid": "0", "dorder": "0", "cdate": cdate, "links": [], "id": f.id}
        for f in chosen
    ]
    return _paged(items, call, "fields", fieldOptions=[], fieldRels=rels)


@route("GET", "/tags")
def tags(api: Api, call: Call) -> Response:
    """The account's tags (``search`` matches a part of the name, any case)."""
    with api.account.lock:
        found = api.account.tags()
    search = (call.query.get("search") or "").lower()
    items = [shapes.tag(t, call.base) for t in found if search in t.name.lower()]
    return _paged(items, call, "tags")


@route("GET", "/users/me")
def users_me(api: Api, call: Call) -> Response:
    """The key's user: the documented way to check a key."""
    return json_response(200, shapes.user(call.base))
