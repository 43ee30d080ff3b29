"""The ActiveCampaign API v3 client: the few calls the exporter makes, done carefully.

Every request goes through one path (:meth:`ActiveCampaignClient._call`): wait for the rate
limiter, send through the :class:`~.transport.Transport`, judge the answer in
:func:`~.status.raise_for_status`, and retry what is retriable under the :class:`RetryPolicy`.
Every call the client makes is safe to repeat, which is why all of them are retried:

* ``GET`` requests read;
* a bulk import is one replayable, idempotent upsert of the same contacts (sending a batch
  twice leaves ActiveCampaign as sending it once), and ActiveCampaign says resubmitting is safe;
* ``contact/sync`` upserts by email and ``contactLists`` sets a status: both idempotent.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from exporter import __version__
from exporter.errors import ConfigError, FatalApiError, RetriableApiError
from exporter.masking import mask_email
from exporter.planning.contacts import dumps, encode_bulk_body

from .limiter import RateLimiter, RequestKind
from .list_members import PAGE_LIMIT, ListMemberReads
from .retry import RetryPolicy
from .status import raise_for_status
from .transport import RequestsTransport, Transport

THROTTLED = frozenset({429, 400})
"""Statuses of a throttle answer (429, and the bulk "Rate limit exceeded." 400): their wait
holds back the whole account."""

logger = logging.getLogger(__name__)

API_PREFIX = "/api/3"
VERIFY_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.5, max_backoff=1.0, deadline=20.0)
"""Connect waits on one quick retry of ``users/me`` (a run has minutes of patience)."""


def is_loopback_host(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1``."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def base_url_for_host(host: str) -> str:
    """The API base URL for a REST endpoint hostname (``host[:port]``): ``https://host``, or
    plain ``http://`` for a loopback sandbox."""
    hostname = urlsplit(f"//{host}").hostname or ""
    scheme = "http" if is_loopback_host(hostname) else "https"
    return f"{scheme}://{host}"


def _checked_base_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/`` or ``/api/3``; TLS unless it is a loopback host."""
    parts = urlsplit(base_url.strip())
    host = parts.hostname or ""
    if not host or parts.scheme not in ("http", "https"):
        raise ConfigError("must be an http(s) URL with a hostname", field="base_url")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ConfigError(
            f"plain HTTP is only allowed to a loopback sandbox, not {host}: use https://",
            field="base_url",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError("must not carry credentials, a query or a fragment", field="base_url")
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return f"{parts.scheme}://{parts.netloc}{path}"


@dataclass(frozen=True)
class BulkImportAccepted:
    """ActiveCampaign queued a bulk import (200 only means *queued*, not imported)."""

    batch_id: str
    queued: int


@dataclass(frozen=True)
class ImportStatus:
    """``GET /import/info``: ``status`` is ``None`` while ActiveCampaign still answers
    ``false`` (right after the POST); ``success`` holds contact ids, ``failure`` emails."""

    status: str | None
    success: list[str] = field(default_factory=list)
    failure: list[str] = field(default_factory=list)


def _as_str_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class ActiveCampaignClient(ListMemberReads):
    """A thread-safe client for one ActiveCampaign account.

    ``limiter`` is shared by everything that talks to the same account from this process
    (the default gives this client the whole account budget). ``sleep`` and ``clock`` are used
    for retries and polling, ``rng`` for retry jitter; inject fakes in tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: Transport | None = None,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - an immutable value
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key or not api_key.strip():
            raise ConfigError("an API key is required", field="api_key")
        if timeout <= 0:
            raise ConfigError("must be positive", field="timeout")
        self.base_url = _checked_base_url(base_url)
        self._api_key = api_key.strip()
        self._transport: Transport = transport or RequestsTransport()
        self.limiter = limiter or RateLimiter(clock=clock, sleep=sleep)
        self.retry = retry
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock  # only to read Retry-After given as an HTTP date
        self._answers = threading.local()  # the last answer's Date header, per thread

    def __repr__(self) -> str:  # never the key
        return f"ActiveCampaignClient({self.base_url!r})"

    def close(self) -> None:
        """Close the transport's pooled connections (when it has any)."""
        close = getattr(self._transport, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> ActiveCampaignClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the one request path ---------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: bytes | None = None,
        kind: RequestKind = RequestKind.OTHER,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Send one request (retried per the policy, ``retry`` or the client's: every call
        here is idempotent) and return its parsed JSON body."""
        url = f"{self.base_url}{API_PREFIX}{path}"
        headers = {
            "Api-Token": self._api_key,
            "Accept": "application/json",
            "User-Agent": f"activecampaign-segment-exporter/{__version__}",
        }
        if json_body is not None:
            headers["Content-Type"] = "application/json"

        def attempt() -> Any:
            self.limiter.acquire(kind)
            response = self._transport.request(
                method,
                url,
                headers=headers,
                params=params,
                body=json_body,
                timeout=self.timeout,
            )
            logger.debug("%s %s -> %d", method, path, response.status)
            self._answers.date = response.header("Date")
            try:
                raise_for_status(
                    response,
                    method=method,
                    path=path,
                    bulk=kind.bulk,
                    secrets=(self._api_key,),
                    wall_clock=self._wall_clock,
                    bulk_throttle_pause=60.0 / self.limiter.time_scale,
                )
            except RetriableApiError as error:
                if error.status in THROTTLED and error.retry_after is not None:
                    # The account is over budget: every run on it waits, not only this one.
                    self.limiter.block_until(self.limiter.clock() + error.retry_after)
                raise
            try:
                return response.json() if response.body.strip() else {}
            except (ValueError, UnicodeDecodeError):
                raise FatalApiError(
                    f"{method} {path}: ActiveCampaign answered {response.status} with a body "
                    "that is not JSON",
                    status=response.status,
                ) from None

        policy = retry or self.retry
        return policy.call(
            attempt, sleep=self.sleep, clock=self.clock, rng=self._rng, what=f"{method} {path}"
        )

    def _paged(
        self, path: str, key: str, params: Mapping[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a ``limit``/``offset`` collection, to the last page (``meta.total``)."""
        offset = 0
        while True:
            page = self._call(
                "GET",
                path,
                params={**(params or {}), "limit": str(PAGE_LIMIT), "offset": str(offset)},
            )
            items = page.get(key) if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise FatalApiError(f"GET {path}: answer has no {key!r} list")
            yield from items
            offset += len(items)
            try:
                total = int(page.get("meta", {}).get("total"))
            except (TypeError, ValueError, AttributeError):
                total = None
            if (
                not items
                or (total is not None and offset >= total)
                or (total is None and len(items) < PAGE_LIMIT)
            ):
                return

    # --- account, lists, fields, tags -------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        """``GET /users/me``: the key's user; raises AuthenticationError for a bad key. Someone
        is waiting on a Connect: one quick retry, not a run's minutes of patience."""
        answer = self._call("GET", "/users/me", retry=VERIFY_RETRY)
        user = answer.get("user") if isinstance(answer, dict) else None
        return user if isinstance(user, dict) else {}

    def get_list(self, list_id: str) -> dict[str, Any]:
        """``GET /lists/{id}``; raises ApiNotFound (with ActiveCampaign's message) if unknown."""
        answer = self._call("GET", f"/lists/{quote(str(list_id), safe='')}")
        found = answer.get("list") if isinstance(answer, dict) else None
        if not isinstance(found, dict):
            raise FatalApiError(f"GET /lists/{list_id}: answer has no 'list' object")
        return found

    def iter_fields(self) -> Iterator[dict[str, Any]]:
        """Every custom field (``id``, ``title``, ``perstag``, ``type``), all pages."""
        return self._paged("/fields", "fields")

    def iter_lists(self) -> Iterator[dict[str, Any]]:
        """Every list (``id``, ``name``), all pages."""
        return self._paged("/lists", "lists")

    def iter_tags(self) -> Iterator[dict[str, Any]]:
        """Every tag, all pages."""
        return self._paged("/tags", "tags")

    # --- bulk import ------------------------------------------------------------------------

    def bulk_import(
        self, payloads: Sequence[str], *, exclude_automations: bool
    ) -> BulkImportAccepted:
        """``POST /import/bulk_import`` with these serialised contacts (one batch).

        Raises ContactsRejected when ActiveCampaign names invalid contacts (nothing queued).
        """
        if not payloads:
            raise ValueError("a bulk import needs at least one contact")
        body = encode_bulk_body(payloads, exclude_automations=exclude_automations)
        kind = RequestKind.BULK_SINGLE if len(payloads) == 1 else RequestKind.BULK_MULTI
        answer = self._call("POST", "/import/bulk_import", json_body=body, kind=kind)
        if not isinstance(answer, dict):
            answer = {}
        success = answer.get("success", answer.get("Success"))
        batch_id = answer.get("batchId")
        if str(success) != "1" or not isinstance(batch_id, str) or not batch_id:
            raise FatalApiError("POST /import/bulk_import: answer is not a queued import")
        try:
            queued = int(answer.get("queued_contacts", len(payloads)))
        except (TypeError, ValueError):
            queued = len(payloads)
        return BulkImportAccepted(batch_id=batch_id, queued=queued)

    def import_info(self, batch_id: str) -> ImportStatus:
        """``GET /import/info?batchId=…``; ``status`` is ``None`` while it is still ``false``."""
        answer = self._call(
            "GET", "/import/info", params={"batchId": batch_id}, kind=RequestKind.POLL
        )
        if not isinstance(answer, dict):
            answer = {}
        status = answer.get("status")
        return ImportStatus(
            status=status if isinstance(status, str) and status else None,
            success=_as_str_list(answer.get("success")),
            failure=_as_str_list(answer.get("failure")),
        )

    # --- single contacts --------------------------------------------------------------------

    def find_contact(self, email: str) -> dict[str, Any] | None:
        """The contact with this email, or ``None``."""
        answer = self._call("GET", "/contacts", params={"email": email})
        contacts = answer.get("contacts") if isinstance(answer, dict) else None
        if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict):
            return contacts[0]
        return None

    def contact_sync(
        self,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        phone: str | None = None,
        field_values: Mapping[str, str] | None = None,
    ) -> str:
        """``POST /contact/sync`` (upsert by email; note the camelCase body); the contact id."""
        contact: dict[str, Any] = {"email": email}
        for key, value in (("firstName", first_name), ("lastName", last_name), ("phone", phone)):
            if value is not None:
                contact[key] = value
        if field_values:
            contact["fieldValues"] = [
                {"field": str(fid), "value": value} for fid, value in field_values.items()
            ]
        answer = self._call("POST", "/contact/sync", json_body=dumps({"contact": contact}).encode())
        found = answer.get("contact") if isinstance(answer, dict) else None
        if not isinstance(found, dict) or "id" not in found:
            raise FatalApiError("POST /contact/sync: answer has no contact id")
        logger.debug("synced contact %s as %s", mask_email(email), found["id"])
        return str(found["id"])

    def set_list_status(self, contact_id: str, list_id: str, status: int) -> None:
        """``POST /contactLists``: 1 subscribes, 2 unsubscribes.

        Status 1 **re-subscribes a person who unsubscribed** (ActiveCampaign warns about it):
        the exporter never sends 1 for anyone who opted out.
        """
        if status not in (1, 2):
            raise ValueError("status must be 1 (subscribe) or 2 (unsubscribe)")
        body = {
            "contactList": {"list": str(list_id), "contact": str(contact_id), "status": str(status)}
        }
        self._call("POST", "/contactLists", json_body=dumps(body).encode())
