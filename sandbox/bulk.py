"""Bulk import: request validation and the asynchronous life of a queued batch.

A batch moves through time, not through calls (sandbox seconds, divided by the time scale)::

    0 ─ status false ─ 1.0 ─ waiting ─ 1.5 ─ claimed ─ 1.75 ─ active ─ done

``active`` lasts 0.5 s + 4 ms per contact, half that when every contact excludes automations.
Batches finish in the order they were queued. A batch's contacts are applied (or, for a
``failed``/``interrupted`` batch, dropped) at ``done``, by the importer's worker thread or by
whoever asks first; its status only reads final once that happened.
"""

from __future__ import annotations

import heapq
import re
import threading
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sandbox.account import Account
from sandbox.meter import Meter

MAX_CONTACTS = 250
MAX_BODY_BYTES = 400_000
"""The body must be *below* this many bytes."""

VALIDATION_MESSAGE = (
    "JSON payload did not pass validation. Please fix failure Reasons and retry. "
    "The import was not queued for processing."
)

_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_ID = re.compile(r"^[1-9][0-9]{0,9}$")
_TEXT_KEYS = ("first_name", "last_name", "phone", "customer_acct_name")
_TEXT_KEY_SET = frozenset(_TEXT_KEYS)

PHASES = (("waiting", 1.0), ("claimed", 1.5), ("active", 1.75))
"""(status, sandbox seconds after queueing when it begins); before the first: ``false``."""


_EMAIL_MATCH = _EMAIL.match


def email_syntax_ok(email: str) -> bool:
    """The syntax check ActiveCampaign applies when a request arrives."""
    return len(email) <= 255 and _EMAIL_MATCH(email) is not None


def email_importable(email: str) -> bool:
    """The later check at import time (ActiveCampaign's own example rejects a domain without a
    dot and an apostrophe in the local part there, after the request was queued)."""
    local, _, domain = email.rpartition("@")
    return "." in domain and "'" not in local


def _ident(value: object) -> str | None:
    """An id given as a positive integer or as its string form."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and _ID.match(value):
        return value
    return None


def _check_fields(value: object, account: Account) -> str | None:
    if type(value) is not list:
        return "Field 'fields' must be an array"
    known, dates = account.field_ids, account.date_fields
    for item in value:
        if type(item) is not dict or "id" not in item or "value" not in item:
            return "Each custom field needs 'id' and 'value'"
        raw_id = item["id"]
        field_id = None if type(raw_id) is bool else known.get(raw_id)
        if field_id is None:
            return f"Custom field with id {raw_id} does not exist"
        raw = item["value"]
        kind = type(raw)
        if kind is not str and (kind is bool or kind not in (int, float)):
            return f"Custom field {field_id} value incorrect format"
        if field_id in dates and raw != "" and not _DATE.match(str(raw)):
            return f"Custom field {field_id} value must be a date formatted YYYY-MM-DD"
    return None


def _check_lists(key: str, value: object, account: Account) -> str | None:
    if type(value) is not list:
        return f"Field '{key}' must be an array"
    known = account.list_ids
    for item in value:
        if type(item) is not dict or "listid" not in item:
            return f"Each '{key}' entry needs a 'listid'"
        raw_id = item["listid"]
        if type(raw_id) is bool or raw_id not in known:
            return f"List with id {raw_id} does not exist"
    return None


def _check_tags(value: object) -> str | None:
    if type(value) is not list:
        return "Field 'tags' must be an array of non-empty strings"
    for tag in value:
        if type(tag) is not str or not tag:
            return "Field 'tags' must be an array of non-empty strings"
    return None


def check_contact(contact: object, account: Account) -> str | None:
    """Why this bulk-import contact is rejected, or None when it is acceptable.

    Hot path (250 contacts a request): one pass over the contact's keys, exact type checks."""
    if type(contact) is not dict:
        return "Contact must be an object"
    email = contact.get("email")
    if email is None or email == "":
        return "Field 'email' is required"
    if type(email) is not str or len(email) > 255 or _EMAIL_MATCH(email) is None:
        return "Field 'email' incorrect format"
    problem: str | None = None
    for key, value in contact.items():
        if key in _TEXT_KEY_SET:
            if type(value) is not str:
                return f"Field '{key}' must be a string"
        elif key == "fields":
            problem = _check_fields(value, account)
        elif key == "tags":
            problem = _check_tags(value)
        elif key == "subscribe" or key == "unsubscribe":
            problem = _check_lists(key, value, account)
        elif key == "exclude_automations" and type(value) is not bool:
            problem = "Field 'exclude_automations' must be a boolean"
        if problem is not None:
            return problem
    return None


@dataclass
class QueuedBatch:
    """A bulk import between its 200 and its final status."""

    id: str
    contacts: list[dict[str, object]]
    exclude_automations: bool
    queued_at: float
    done_at: float
    outcome: str
    day: str
    size: int
    final: str | None = None
    success: array[int] = field(default_factory=lambda: array("q"))
    """Ids of the contacts this batch created (8 bytes each: a million must stay cheap)."""
    failure: list[str] = field(default_factory=list)

    def __lt__(self, other: QueuedBatch) -> bool:
        return self.done_at < other.done_at


class Importer:
    """Queues validated bulk imports and applies them when they are due."""

    def __init__(
        self, account: Account, meter: Meter, clock: Callable[[], float], time_scale: float
    ) -> None:
        self._account = account
        self._meter = meter
        self._clock = clock
        self._scale = time_scale
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._batches: dict[str, QueuedBatch] = {}
        self._heap: list[QueuedBatch] = []
        self._last_done = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- queueing ---------------------------------------------------------------------------

    def queue(self, contacts: list[dict[str, object]], exclude_automations: bool) -> QueuedBatch:
        """Accept a validated request; returns the batch (its id goes back to the client)."""
        now = self._clock()
        everyone_excluded = exclude_automations or all(
            c.get("exclude_automations") is True for c in contacts
        )
        active = (0.5 + 0.004 * len(contacts)) * (0.5 if everyone_excluded else 1.0)
        batch_id = str(uuid.UUID(bytes=self._meter.rng_bytes(), version=4))
        outcome = self._meter.draw_batch_outcome()
        with self._lock:
            done_at = max(now + (PHASES[-1][1] + active) / self._scale, self._last_done)
            self._last_done = done_at
            batch = QueuedBatch(
                id=batch_id,
                contacts=contacts,
                exclude_automations=exclude_automations,
                queued_at=now,
                done_at=done_at,
                outcome=outcome,
                day=datetime.now(UTC).date().isoformat(),
                size=len(contacts),
            )
            self._batches[batch_id] = batch
            heapq.heappush(self._heap, batch)
        with self._wake:
            self._wake.notify()
        return batch

    # -- reading ----------------------------------------------------------------------------

    def info(self, batch_id: str) -> tuple[str | bool, list[str], list[str]]:
        """(status, success contact ids, failure emails). Unknown ids read ``false``, like a
        batch not yet registered, forever."""
        self.process_due()
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return False, [], []
            if batch.final is not None:
                return batch.final, [str(i) for i in batch.success], list(batch.failure)
            elapsed = (self._clock() - batch.queued_at) * self._scale
        status: str | bool = False
        for name, begins in PHASES:
            if elapsed >= begins:
                status = name
        return status, [], []

    def summary(self) -> dict[str, list[dict[str, str]]]:
        """``GET /import/bulk_import``: batches and contacts per day, outstanding (not final)
        and recently completed (final ``completed``)."""
        self.process_due()
        outstanding: dict[str, list[int]] = {}
        completed: dict[str, list[int]] = {}
        with self._lock:
            for batch in self._batches.values():
                if batch.final is None:
                    bucket = outstanding
                elif batch.final == "completed":
                    bucket = completed
                else:
                    continue
                day = bucket.setdefault(batch.day, [0, 0])
                day[0] += 1
                day[1] += batch.size

        def rows(days: dict[str, list[int]]) -> list[dict[str, str]]:
            return [
                {"forDate": d, "batches": str(n), "contacts": str(c)}
                for d, (n, c) in sorted(days.items())
            ]

        return {"outstanding": rows(outstanding), "recentlyCompleted": rows(completed)}

    def pending(self) -> int:
        """Batches not yet final."""
        with self._lock:
            return len(self._heap)

    # -- applying ---------------------------------------------------------------------------

    def process_due(self) -> None:
        """Finish every batch whose time has come, in queue order."""
        now = self._clock()
        with self._lock:
            while self._heap and self._heap[0].done_at <= now:
                self._finish(heapq.heappop(self._heap))

    def _finish(self, batch: QueuedBatch) -> None:
        contacts, batch.contacts = batch.contacts, []
        if batch.outcome != "completed":
            batch.final = batch.outcome
            return
        forced = self._meter.failure_emails()
        account = self._account
        injected = 0
        with account.lock:
            for raw in contacts:
                email = str(raw["email"])
                key = email.lower()
                if key in forced:
                    injected += 1
                    batch.failure.append(email)
                elif not email_importable(key):
                    batch.failure.append(email)
                else:
                    created = account.import_contact(raw, key, batch.exclude_automations)
                    if created is not None:
                        batch.success.append(created)
        if injected:
            self._meter.count_injected("failure_email", injected)
        batch.final = "completed"

    # -- worker -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread that applies batches as they fall due."""
        self._thread = threading.Thread(target=self._run, name="sandbox-importer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker (pending batches stay pending)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self.process_due()
            with self._lock:
                nxt = self._heap[0].done_at if self._heap else None
            delay = 0.05 if nxt is None else min(max(nxt - self._clock(), 0.001), 0.05)
            with self._wake:
                if self._stopping:
                    return
                self._wake.wait(delay)
                if self._stopping:
                    return
