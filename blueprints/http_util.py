"""JSON over HTTP for the Functions app: reading request bodies, writing answers and errors.

Every error answer has one shape, so a client (or a form) can point at the offending field::

    {"code": "invalid", "errors": [{"field": "hostname", "message": "..."}]}

``field`` is ``null`` when the problem is not about one field. Messages come from our own
exceptions, which never carry secrets or echo user input; anything that is not one of ours is
answered with a generic 500 and logged by type, since its text is not ours to vouch for.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import azure.functions as func

from exporter.errors import (
    ConfigError,
    ConfigErrors,
    ConflictError,
    ExporterError,
    NotFoundError,
    RetriableApiError,
)
from exporter.http_errors import (
    HttpProblem,
    PayloadTooLarge,
    PreconditionFailed,
    UnsupportedMediaType,
    http_status,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64_000
"""Default limit of a request body: configuration documents are a few kilobytes."""
JSON_TYPES = ("application/json",)
"""Accepted request content types (with any parameters, e.g. ``; charset=utf-8``)."""

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_SAFE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


# --- answers -----------------------------------------------------------------------------------


def json_response(
    obj: object, status: int = 200, *, headers: Mapping[str, str] | None = None
) -> func.HttpResponse:
    """``obj`` as a JSON answer (never cached: answers carry configuration)."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return func.HttpResponse(
        body,
        status_code=status,
        headers={**_SAFE_HEADERS, **(headers or {})},
        mimetype="application/json",
        charset="utf-8",
    )


def _field_errors(exc: ConfigError) -> list[dict[str, str | None]]:
    if isinstance(exc, ConfigErrors):
        out: list[dict[str, str | None]] = []
        for inner in exc.errors:
            out.extend(_field_errors(inner))
        return out
    return [{"field": exc.field, "message": exc.detail}]


def error_response(exc: Exception, *, conditional: bool = False) -> func.HttpResponse:
    """The JSON error answer for ``exc``.

    ``conditional``: the request carried ``If-Match``/``If-None-Match``, so a conflict (or a
    missing object) is the precondition failing: 412 instead of 409/404.
    """
    if conditional and isinstance(exc, ConflictError | NotFoundError):
        exc = PreconditionFailed(exc.detail, field=exc.field)
    status, code = http_status(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, ConfigError):
        errors = _field_errors(exc)
    elif isinstance(exc, HttpProblem):
        errors = [{"field": exc.field, "message": exc.detail}]
    elif isinstance(exc, ExporterError):
        errors = [{"field": None, "message": str(exc)}]
    else:
        errors = [{"field": None, "message": "internal error; see the app's logs"}]
    if status == HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="activecampaign-segment-exporter"'
    if isinstance(exc, RetriableApiError) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    _log(exc, status, code)
    return json_response({"code": code, "errors": errors}, status, headers=headers)


def _log(exc: Exception, status: int, code: str) -> None:
    if not isinstance(exc, ExporterError):
        # Not ours: its text may hold anything, so the type and traceback only.
        log.error("request failed with %s", type(exc).__name__, exc_info=exc)
    elif status >= 500:
        log.warning("request failed: %s (%s)", code, exc)
    else:
        log.info("request refused: %d %s", status, code)


# --- requests ----------------------------------------------------------------------------------


def _media_type(req: func.HttpRequest) -> str:
    return (req.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Two "api_key"s (or "hostname"s): which one the sender meant is anyone's guess.
            # The key is named only when it looks like a field name: it is user input.
            shown = key if _FIELD_NAME.fullmatch(key) else None
            raise ConfigError("appears more than once in the JSON object", field=shown)
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise ConfigError(f"{name} is not valid JSON")


def read_json_body(req: func.HttpRequest, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises :class:`UnsupportedMediaType` (415) unless the body is declared ``application/json``,
    :class:`PayloadTooLarge` (413) beyond ``max_bytes``, and :class:`ConfigError` (400) for an
    empty body, invalid UTF-8 or JSON, duplicate keys or anything but an object. Messages give
    the position of a syntax error, never the text around it.
    """
    declared = req.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
    body = req.get_body() or b""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the request body exceeds {max_bytes} bytes")
    if _media_type(req) not in JSON_TYPES:
        raise UnsupportedMediaType("send the body as JSON (Content-Type: application/json)")
    if not body.strip():
        raise ConfigError("the request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError("the request body is not valid UTF-8") from None
    try:
        data = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the request body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise ConfigError("the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    return data


def query_flag(req: func.HttpRequest, name: str, *, default: bool = False) -> bool:
    """A boolean query parameter (``true``/``false``/``1``/``0``; absent is ``default``)."""
    raw = req.params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("", "true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ConfigError("must be true or false", field=name)


def route_name(req: func.HttpRequest, param: str = "name") -> str:
    """A route parameter (the object's name); the service validates its form."""
    value = req.route_params.get(param)
    if not isinstance(value, str) or not value:
        raise ConfigError("is required in the URL", field=param)
    return value


def etag_headers(etag: str) -> dict[str, str]:
    """``ETag`` for an answer; store ETags are already quoted, bare ones get quotes."""
    quoted = etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'
    return {"ETag": quoted}


def if_match(req: func.HttpRequest) -> str | None:
    """The ``If-Match`` ETag, ``"*"``, or ``None`` when absent (bare tags get quotes)."""
    raw = (req.headers.get("If-Match") or "").strip()
    if not raw:
        return None
    if raw == "*" or raw.startswith(('"', "W/")):
        return raw
    return f'"{raw}"'


def if_none_match_any(req: func.HttpRequest) -> bool:
    """Whether the request says ``If-None-Match: *`` (create only, never replace)."""
    raw = (req.headers.get("If-None-Match") or "").strip()
    if raw and raw != "*":
        raise ConfigError("only 'If-None-Match: *' is supported", field="If-None-Match")
    return raw == "*"
