"""One account's API budget shared by workers on any machine: a ledger in one store object.

The command line's processes share an account's budget through a locked file
(:class:`~exporter.activecampaign.ledger.FileLedger`). An Azure Functions app's workers — the
activities of every run on the account, on whatever instances they land — cannot lock a file
together, so they share ``state/_accounts/<api hostname>.ledger.json`` in the app's store (a
blob) with **optimistic concurrency**: each reservation reads the object with its ETag, and
writes it back only if the ETag still matches (``If-Match``; ``If-None-Match: *`` for the first
write). A worker that lost the race raises
:class:`~exporter.activecampaign.ledger.LedgerConflict` and its limiter reads and reserves
again, so two workers never both take the last slot of a window.

With every worker's reservations in one book, a worker sees what the account's other workers
sent (also in an earlier step of the orchestration), so it may burst up to the account's budget
like the command line does, instead of pacing itself evenly within a fixed share.

Costs: a reservation is one read and one write (a conflict one more of each); a look that
changes nothing (a status poll held back for a push) is a read only. The object holds the last
minute's starts, a few kilobytes. A worker that dies leaves its reservations behind: they count
as used until they leave their window (at most a minute). A damaged object reads as empty: the
ledger is a pacing aid, never the record of anything sent. The clock is the wall clock, which
the instances share through NTP; the limiter's allowance (0.1 s with a ledger) covers their
skew and the time between a reservation and the request.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator

from exporter.activecampaign.ledger import Book, LedgerConflict, dump_book, parse_book
from exporter.storage.store import ObjectNotFound, PreconditionFailed, Store

_SAFE = re.compile(r"[^A-Za-z0-9.-]")
LEAD_FACTOR = 1.5
"""The lead is this many times the recent write latency (the limiter takes off what its
tolerance of a late start covers)."""
MAX_LEAD = 0.5
"""Seconds: the lead never grows beyond this, however slow the store is for a while."""


def ledger_path(hostname: str) -> str:
    """The ledger of the account at ``hostname`` in the store."""
    return f"state/_accounts/{_SAFE.sub('_', hostname.lower())}.ledger.json"


def store_ledgers(store: Store) -> Callable[[str], StoreLedger]:
    """``RunContext``'s ``ledger_for`` of a Functions app: each account's ledger in ``store``."""
    return lambda hostname: StoreLedger(store, hostname)


class StoreLedger:
    """A :class:`~exporter.activecampaign.ledger.BudgetLedger` in one store object (see the
    module docstring)."""

    def __init__(self, store: Store, hostname: str) -> None:
        self._store = store
        self.path = ledger_path(hostname)
        self._latency = 0.0
        self._guard = threading.Lock()
        self.writes = 0
        """Writes made (successful or refused)."""
        self.conflicts = 0
        """Writes refused because another worker wrote first."""

    @property
    def lead(self) -> float:
        """Seconds a reservation should lie ahead of now: a little more than a recent write."""
        return min(MAX_LEAD, LEAD_FACTOR * self._latency)

    def peek(self) -> Book:
        """The ledger as last written (for showing the account's use, never for reserving)."""
        try:
            return parse_book(self._store.read_bytes(self.path))
        except ObjectNotFound:
            return Book()

    @contextlib.contextmanager
    def locked(self, keep_after: float) -> Iterator[Book]:
        try:
            data, etag = self._store.read_with_etag(self.path)
        except ObjectNotFound:
            data, etag = b"", None
        book = parse_book(data)
        before = ({name: list(times) for name, times in book.starts.items()}, book.blocked_until)
        yield book
        if (book.starts, book.blocked_until) == before:
            return  # nothing reserved or given back: no write
        out = dump_book(book, keep_after)
        began = time.monotonic()
        try:
            if etag is None:
                self._store.write_bytes(self.path, out, if_none_match=True)
            else:
                self._store.write_bytes(self.path, out, if_match=etag)
        except PreconditionFailed:
            with self._guard:
                self.conflicts += 1
            raise LedgerConflict(f"{self.path} was written by another worker") from None
        finally:
            self._observe(time.monotonic() - began)

    def _observe(self, seconds: float) -> None:
        with self._guard:
            self.writes += 1
            # A moving average that follows a slow store at once and forgets it gradually.
            self._latency = max(seconds, 0.8 * self._latency + 0.2 * seconds)
