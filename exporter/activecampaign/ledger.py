"""One account's API budget shared by every process on a machine: a ledger file.

ActiveCampaign's limits (5 requests/s, 100 multi-contact bulk imports a minute) belong to the
*account*, so two runs on one account — a cron job and a second terminal, two exports scheduled
at the same minute, ``connections add --verify`` just before a run — must draw on one budget.
A :class:`~exporter.activecampaign.limiter.RateLimiter` given a :class:`FileLedger` keeps its
reservations there instead of in memory: every reservation is made under an exclusive
``flock`` on the account's ledger file, after reading every other process's reservations, so
the processes together stay within every window.

The file (``<store folder>/budget/<api hostname>.json``, replaced atomically under the lock of
``<api hostname>.lock`` beside it) holds reserved start times on the wall
clock (shared by processes, unlike a monotonic clock) per budget, and ``blocked_until``: when
ActiveCampaign answers 429 (or a bulk "Rate limit exceeded.") with a wait, the next request of
*every* run on the account waits for it, not only the one that was told. Entries older than any
window are dropped on every write, so the file stays a few kilobytes.

A process that dies leaves its future reservations behind; they expire with their window (at
most a minute of budget not used). A damaged file is treated as empty (and rewritten): the
ledger is a pacing aid, never the record of anything sent.

Workers on several machines (Azure activities) share a ledger in one store object instead
(:class:`~exporter.storage.budget_ledger.StoreLedger`): read with its ETag, written only if
nobody wrote meanwhile, else :class:`LedgerConflict` and the limiter reserves again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from exporter.errors import ExporterError


@dataclass
class Book:
    """The ledger's content while it is locked."""

    starts: dict[str, list[float]] = field(default_factory=dict)
    """Reserved start times (wall clock, seconds) per budget name, ascending."""
    blocked_until: float = 0.0
    """No request of the account may start before this (wall clock): the server's last wait."""


class LedgerConflict(ExporterError):
    """Another worker wrote the ledger between this one's read and write (optimistic
    concurrency): nothing was written; read it again and reserve again."""


class BudgetLedger(Protocol):
    """Where an account's reservations live while a limiter holds its lock."""

    @property
    def lead(self) -> float:
        """Seconds (real) a reservation should lie ahead of the moment it is made, so that
        writing it does not already make it late (0 for a local file)."""
        ...

    def locked(self, keep_after: float) -> contextlib.AbstractContextManager[Book]:
        """The book, exclusively, for one reservation; written back on exit. Entries before
        ``keep_after`` may be dropped. A ledger without a lock raises :class:`LedgerConflict`
        on exit when another writer came first (nothing written)."""
        ...


_SAFE = re.compile(r"[^A-Za-z0-9.-]")


class FileLedger:
    """A :class:`BudgetLedger` in one file, shared through ``flock`` (same machine)."""

    lead = 0.0
    """A local file is written in well under the limiter's tolerance of a late start."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def for_account(cls, folder: str | os.PathLike[str], hostname: str) -> FileLedger:
        """The ledger of the account at ``hostname`` in ``folder`` (one file per account)."""
        return cls(Path(folder) / f"{_SAFE.sub('_', hostname.lower())}.json")

    def peek(self) -> Book:
        """The ledger as last written, without taking the lock (it is replaced atomically):
        for showing the account's use, never for reserving."""
        try:
            return parse_book(self.path.read_bytes())
        except FileNotFoundError:
            return Book()

    @contextlib.contextmanager
    def locked(self, keep_after: float) -> Iterator[Book]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock is a file of its own, so the ledger can be replaced atomically (a process
        # killed mid-write never leaves half a ledger behind) while the lock stays put.
        lock = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                book = parse_book(self.path.read_bytes())
            except FileNotFoundError:
                book = Book()
            yield book
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(dump_book(book, keep_after))
            os.replace(tmp, self.path)
        finally:
            os.close(lock)  # closing releases the lock


def parse_book(data: bytes) -> Book:
    """A ledger's content; a damaged one is an empty book."""
    try:
        raw = json.loads(data) if data.strip() else {}
        starts = {
            str(name): sorted(float(t) for t in times)
            for name, times in dict(raw.get("starts", {})).items()
        }
        return Book(starts=starts, blocked_until=float(raw.get("blocked_until", 0.0)))
    except (ValueError, TypeError, AttributeError):
        return Book()  # a pacing aid, not a record: start afresh


def dump_book(book: Book, keep_after: float) -> bytes:
    """A ledger's content without the entries before ``keep_after``."""
    starts = {name: [t for t in times if t > keep_after] for name, times in book.starts.items()}
    blocked = book.blocked_until if book.blocked_until > keep_after else 0.0
    return json.dumps({"starts": starts, "blocked_until": blocked}).encode()
