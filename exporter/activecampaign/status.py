"""Every ActiveCampaign answer is judged here, and only here.

==========================================  ==============================================
answer                                      raised
==========================================  ==============================================
2xx                                         nothing (the caller parses the body)
401, 403                                    :class:`AuthenticationError` (stops the run)
404                                         :class:`ApiNotFound` with the server's message
408, 429                                    :class:`RetriableApiError` (``Retry-After`` kept)
5xx (503 may be an HTML page)               :class:`RetriableApiError` (``Retry-After`` kept)
bulk 400 ``"Rate limit exceeded."``         :class:`RetriableApiError` (the bulk throttle)
bulk 400 ``failureReasons`` naming contacts :class:`ContactsRejected` (0-based indexes)
any other 4xx                               :class:`FatalApiError`
==========================================  ==============================================

Messages quote the method, the path (never the query: it may hold an email address) and a
short, email-masked excerpt of the server's explanation; never the API key or the request body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from exporter import telemetry
from exporter.errors import (
    ApiNotFound,
    AuthenticationError,
    ContactsRejected,
    FatalApiError,
    RejectedContact,
    RetriableApiError,
)
from exporter.masking import mask_email

from .transport import Response

_EMAIL = re.compile(r"[^\s\"'<>(),;:]+@[^\s\"'<>(),;:]+")
_MAX_DETAIL = 200
RETRIABLE_4XX = frozenset({408, 429})
BULK_RATE_LIMIT_MESSAGE = "rate limit exceeded"


def mask_emails(text: str) -> str:
    """``text`` with every email-looking token masked."""
    return _EMAIL.sub(lambda m: mask_email(m.group(0)), text)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """``Retry-After`` in seconds from now: delta-seconds or an HTTP date; ``None`` if absent
    or unreadable. ``now`` is wall-clock time (``time.time()``), for the HTTP-date form."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means the zone was omitted
        return None
    return max(when.timestamp() - now, 0.0)


def _json_or_none(response: Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _server_detail(payload: Any) -> str:
    """ActiveCampaign's explanation, from whichever error shape it used."""
    if not isinstance(payload, dict):
        return ""
    parts: list[str] = []
    errors = payload.get("errors")
    if isinstance(errors, list):
        for err in errors:
            if isinstance(err, dict):
                text = str(err.get("title") or err.get("detail") or err.get("code") or "")
                source = err.get("source")
                pointer = source.get("pointer") if isinstance(source, dict) else None
                parts.append(f"{text} ({pointer})" if pointer else text)
    message = payload.get("message")
    if isinstance(message, str):
        parts.append(message)
    return "; ".join(p for p in parts if p)


def _safe(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = mask_emails(" ".join(text.split()))
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _bulk_rejections(payload: Any) -> list[RejectedContact] | None:
    """The contacts a bulk 400 names, 0-based; ``None`` when it names none."""
    reasons = payload.get("failureReasons") if isinstance(payload, dict) else None
    if not isinstance(reasons, list):
        return None
    rejected: list[RejectedContact] = []
    for item in reasons:
        if not isinstance(item, dict):
            return None
        position = item.get("contact")
        if isinstance(position, bool) or not isinstance(position, int | str):
            return None
        try:
            index = int(position) - 1  # ActiveCampaign counts contacts from 1
        except ValueError:
            return None
        if index < 0:
            return None
        rejected.append(RejectedContact(index=index, reason=str(item.get("failureReason", ""))))
    return rejected or None


def raise_for_status(
    response: Response,
    *,
    method: str,
    path: str,
    bulk: bool = False,
    secrets: tuple[str, ...] = (),
    wall_clock: Callable[[], float] = time.time,
    bulk_throttle_pause: float = 60.0,
) -> None:
    """Raise the error this answer means, or return if it is a success.

    ``bulk`` marks ``POST /import/bulk_import``, whose 400s carry the bulk throttle and
    per-contact validation failures. ``secrets`` are scrubbed from any quoted server text.
    ``bulk_throttle_pause`` is the wait suggested after the bulk throttle when it sends no
    ``Retry-After`` (ActiveCampaign's message says to retry "in a minute").
    """
    status = response.status
    if 200 <= status < 300:
        return
    where = f"{method} {path}"
    payload = _json_or_none(response)
    detail = _safe(_server_detail(payload), secrets)
    suffix = f": {detail}" if detail else ""
    retry_after = parse_retry_after(response.header("Retry-After"), now=wall_clock())

    if status in (401, 403):
        raise AuthenticationError(
            f"API key rejected by ActiveCampaign ({status} on {where}); check the connection's "
            "key and that its user may use the API",
            status=status,
        )
    if status == 404:
        raise ApiNotFound(f"{where}: not found{suffix}", status=status)
    if status in RETRIABLE_4XX or status >= 500:
        kind = "throttled" if status == 429 else "temporarily unavailable"
        if status == 429:
            telemetry.throttled(status)
        raise RetriableApiError(
            f"{where}: ActiveCampaign {kind} ({status}){suffix if payload else ''}",
            status=status,
            retry_after=retry_after,
        )
    if bulk and status == 400:
        message = payload.get("message") if isinstance(payload, dict) else None
        if isinstance(message, str) and BULK_RATE_LIMIT_MESSAGE in message.lower():
            telemetry.throttled(status)
            raise RetriableApiError(
                f"{where}: bulk import rate limit exceeded",
                status=status,
                retry_after=bulk_throttle_pause if retry_after is None else retry_after,
            )
        rejected = _bulk_rejections(payload)
        if rejected is not None:
            raise ContactsRejected(rejected)
    raise FatalApiError(f"{where}: ActiveCampaign answered {status}{suffix}", status=status)
