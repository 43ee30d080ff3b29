"""A proactive, account-wide rate limiter, so a clean run is never throttled.

ActiveCampaign allows 5 requests per second per *account* (every request), and on top of that
100 bulk-import requests per minute that carry several contacts and 20 per minute that carry
one. Every applicable budget is enforced at once with **sliding windows**: a request may start
at ``t`` only if fewer than ``limit`` requests of its kind started in ``(t - period, t]``.
(A bursty token bucket could spend 100 bulk requests in the first second of a minute, which
the per-minute budget allows but the 5/s budget does not.)

Each request *reserves* its start time under a lock and then sleeps outside it, so threads
sharing one limiter (push and confirm) queue fairly and never exceed a budget together.

``share`` gives this limiter a fraction of the account's budget (N concurrent workers each get
``1/N``): each window keeps its period and allows ``floor(limit * share)`` requests, so N
workers together stay within the account's limit in *every* window. (When ``limit * share`` is
below 1 the worker gets one request per ``period / (limit * share)``; N workers then need luck
to stay in budget, so keep N at or below the smallest limit, 5.) ``time_scale`` multiplies every
budget (benchmarks compress time with the sandbox's matching ``time_scale``).

Two margins absorb the jitter between when we send and when the server counts (a request
delayed in flight can land in the same server window as one sent a full period later):
``slack`` lengthens every window by a fraction (0.5%: clock and window-edge rounding), and
``allowance`` by a fixed number of *real* seconds, because jitter does not shrink when time is
compressed. Its default, :func:`default_allowance`, is 100 ms against the real service (network
jitter) and shrinks towards 25 ms (a few thread-scheduling slices) for a time-compressed local
sandbox. On a busy machine with a very high ``time_scale``, pass a larger ``allowance``. Every
margin is pace given away: against the real service the bulk budget is used at 60 s out of
every 60.4 s (99.3%).

A thread that wakes more than half the allowance after its reserved start (a stalled process:
a garbage collection, a busy core) gives the slot back and reserves again from the moment it
really starts, so a late request never lands in a window that is already full.

**Shared with other processes.** Given a :class:`~exporter.activecampaign.ledger.BudgetLedger`
(the command line passes one file per account in its store folder), the reservations live in
the ledger, read and written under its lock at every reservation, so every process using the
account draws on one budget (each then holds ``share`` 1: the ledger does the sharing). The
clock is then the wall clock, which processes share.

**Status polls wait for the gaps a push leaves.** A bulk push spends the per-minute bulk budget
in bursts at the per-second pace (100 requests in ~22 s, then ~38 s with that budget full).
Every slot of the per-second budget a status poll (``GET import/info``, kind ``POLL``) takes
during a burst delays the burst, and the delay carries into every later minute (the next
burst starts a minute after this one). So a poll is placed only where no bulk request wants
the per-second slot: not while a push is on (two or more bulk requests in the last minute,
the last started or reserved less than two per-second windows ago) *and* its bulk budget has
room now or within one per-second window. Polls then go in the gap where the minute's budget
is spent, or freely once bulk has been idle for two per-second windows (at once when the pusher
says its push is over: :meth:`RateLimiter.push_over`). A lone send (one bulk
request) never holds its poll back; a poll is never held back for more than half a bulk
window (:attr:`RateLimiter.max_poll_deferral`), so a push slower than its budget (a busy
client) cannot starve its confirmations. A poll that wakes to find a push reserved the slots
around its own since it reserved gives its slot back and reserves again
(:attr:`RateLimiter.yielded`).

**A server's wait is for everyone.** :meth:`RateLimiter.block_until` (called by the client when
ActiveCampaign answers 429 or the bulk throttle with a wait) holds back every request of the
account — in this process and, through the ledger, in every other.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from exporter.activecampaign.ledger import Book, BudgetLedger, LedgerConflict

_T = TypeVar("_T")
LEDGER_ATTEMPTS = 50
"""Reads and writes of a shared ledger per reservation before giving up (each lost write means
another worker's reservation went through: the account is not idle, only busy)."""


def default_allowance(time_scale: float, *, shared: bool = False) -> float:
    """Real seconds added to every window: 0.1 s unscaled, never below 0.025 s — and never
    below 0.1 s when processes share the budget: their requests also queue behind each other's
    on the way out and at the server, in real seconds of a busy machine's scheduling, which
    compressed time does not shrink."""
    return max(0.1 if shared else 0.025, 0.1 / time_scale)


class RequestKind(enum.Enum):
    """Which budgets a request draws on (every kind also draws on the per-second budget)."""

    OTHER = "other"
    BULK_MULTI = "bulk_multi"
    """``POST /import/bulk_import`` with two or more contacts."""
    BULK_SINGLE = "bulk_single"
    """``POST /import/bulk_import`` with exactly one contact."""
    POLL = "poll"
    """``GET /import/info``: the per-second budget only, placed where a push does not want the
    slot (module docstring)."""

    @property
    def bulk(self) -> bool:
        """Whether this kind is a bulk import (draws on a per-minute bulk budget)."""
        return self in (RequestKind.BULK_MULTI, RequestKind.BULK_SINGLE)


@dataclass(frozen=True)
class Budget:
    """At most ``limit`` requests in any ``period`` seconds."""

    limit: int
    period: float


ACCOUNT_BUDGET = Budget(limit=5, period=1.0)
"""Every request, per account."""
BULK_MULTI_BUDGET = Budget(limit=100, period=60.0)
BULK_SINGLE_BUDGET = Budget(limit=20, period=60.0)


class SlidingWindow:
    """Reserved start times of one budget; a new start ``t`` fits if, with it, no window
    ``(x - period, x]`` holds more than ``limit`` starts. Reservations may lie in the future
    (a bulk request waiting for its per-minute budget), and a later, cheaper request may take
    an earlier slot in front of them: no request waits behind another's budget."""

    def __init__(
        self,
        budget: Budget,
        *,
        share: float,
        time_scale: float,
        slack: float,
        allowance: float,
        name: str = "",
    ) -> None:
        self.name = name
        """The budget's key in a shared ledger."""
        allowed = budget.limit * share
        if allowed >= 1:
            self.limit = math.floor(allowed + 1e-9)
            period = budget.period
        else:
            self.limit = 1
            period = budget.period / allowed
        self.period = period * (1.0 + slack) / time_scale + allowance
        self._starts: list[float] = []

    def prune(self, now: float) -> None:
        """Forget starts that can no longer share a window with any start at or after ``now``."""
        cut = bisect.bisect_right(self._starts, now - self.period)
        if cut:
            del self._starts[:cut]

    def candidates(self) -> list[float]:
        """Times at which this window's verdict can change: each start, and just after each
        start leaves the window."""
        nudge = self.period * 1e-9 + 1e-9  # so float rounding never leaves the start inside
        return [*self._starts, *(s + self.period + nudge for s in self._starts)]

    def fits(self, t: float) -> bool:
        """Whether a start at ``t`` keeps every window within the limit."""
        starts, period = self._starts, self.period
        # Windows that would contain t end at t or at a later start before t + period; the
        # fullest of them ends exactly at t or at one of those starts.
        ends = [t, *starts[bisect.bisect_right(starts, t) : bisect.bisect_left(starts, t + period)]]
        for x in ends:
            inside = bisect.bisect_right(starts, x) - bisect.bisect_right(starts, x - period)
            if inside + 1 > self.limit:
                return False
        return True

    @property
    def starts(self) -> list[float]:
        return self._starts

    def load(self, starts: list[float]) -> None:
        """Take the reservations of a shared ledger as this window's."""
        self._starts = sorted(starts)

    def record(self, start: float) -> None:
        bisect.insort(self._starts, start)

    def release(self, start: float) -> None:
        """Forget one recorded ``start`` (a reservation given back)."""
        i = bisect.bisect_left(self._starts, start)
        if i < len(self._starts) and self._starts[i] == start:
            del self._starts[i]


class RateLimiter:
    """Thread-safe limiter over ActiveCampaign's account budgets; see the module docstring."""

    def __init__(
        self,
        *,
        share: float = 1.0,
        time_scale: float = 1.0,
        slack: float = 0.005,
        allowance: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        account: Budget = ACCOUNT_BUDGET,
        bulk_multi: Budget = BULK_MULTI_BUDGET,
        bulk_single: Budget = BULK_SINGLE_BUDGET,
        ledger: BudgetLedger | None = None,
    ) -> None:
        """``clock`` defaults to the monotonic clock, or the wall clock with a ``ledger``
        (shared by processes)."""
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be within (0, 1]")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if allowance is None:
            allowance = default_allowance(time_scale, shared=ledger is not None)
        if slack < 0 or allowance < 0:
            raise ValueError("slack and allowance must not be negative")
        self.share = share
        self.time_scale = time_scale
        self.late_tolerance = allowance / 2
        """Seconds a start may lag its reservation before the slot is given back."""
        self.rereserved = 0
        """How many late starts gave their slot back and reserved again."""
        self.yielded = 0
        """How many polls gave their slot back to a push started while they waited."""
        self.held_back = 0
        """How many times a poll was held back for a push (and looked again later)."""
        self.conflicts = 0
        """How many ledger writes lost to another worker's (and were made again)."""
        self._dirty = False
        self._clock = clock or (time.time if ledger is not None else time.monotonic)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._ledger = ledger
        self._blocked_until = float("-inf")

        def window(budget: Budget, name: str) -> SlidingWindow:
            return SlidingWindow(
                budget,
                share=share,
                time_scale=time_scale,
                slack=slack,
                allowance=allowance,
                name=name,
            )

        self._account = window(account, "account")
        multi, single = window(bulk_multi, "bulk_multi"), window(bulk_single, "bulk_single")
        self._windows = (self._account, multi, single)
        self._multi = multi
        self._by_kind = {
            RequestKind.OTHER: (self._account,),
            RequestKind.POLL: (self._account,),
            RequestKind.BULK_MULTI: (self._account, multi),
            RequestKind.BULK_SINGLE: (self._account, single),
        }
        self._longest = max(w.period for w in self._windows)
        self.bulk_idle = 2 * self._account.period
        """A push is over once no bulk request started (or is reserved) for this long."""
        self._own_last_bulk = -math.inf
        self._push_over_at = -math.inf
        """This limiter's last bulk start when its pusher said the push was over."""
        self.max_poll_deferral = multi.period / 2
        """The longest a poll is held back for a push (longer than a burst at full pace:
        20 per-second windows at ActiveCampaign's limits)."""

    def reserve(
        self, kind: RequestKind = RequestKind.OTHER, *, since: float | None = None
    ) -> float:
        """Reserve the earliest allowed start for a request of ``kind``; returns that time
        (on ``clock``). The caller must not start the request before it. ``since``: when a
        ``POLL`` first asked (its deferral is bounded from then; default now)."""
        return self._reserve(kind, since, tentative=False)[0]

    def _reserve(
        self, kind: RequestKind, since: float | None, *, tentative: bool
    ) -> tuple[float, bool]:
        """The earliest allowed start for ``kind`` and whether it was recorded. A ``tentative``
        poll held back for a push is not: it looks again at that time (the pusher reserves
        one import at a time, so a poll's slot reserved ahead would take one the push will
        want)."""
        windows = self._by_kind[kind]

        def body(book: Book | None) -> tuple[float, bool]:
            now = self._clock()
            for w in windows:
                w.prune(now)
            earliest = max(now + self._lead(), self._blocked_until)
            if book is not None:
                earliest = max(earliest, book.blocked_until)
            candidates = {c for w in windows for c in w.candidates()}
            give_up = -math.inf  # only a poll is ever held back for a push
            if kind is RequestKind.POLL:
                self._multi.prune(now)
                give_up = (now if since is None else since) + self.max_poll_deferral
                candidates |= self._poll_candidates(give_up)
            held = False
            # The last option (after every start has left its window, and for a poll after
            # the push is idle or its deferral is spent) always fits.
            for start in sorted({earliest, *(c for c in candidates if c > earliest)}):
                if all(w.fits(start) for w in windows):
                    if not self._bulk_wants(start, give_up):
                        break
                    held = True
            if held and tentative:
                return start, False
            for w in windows:
                w.record(start)
            if kind.bulk:
                self._own_last_bulk = max(self._own_last_bulk, start)
            self._dirty = True
            return start, True

        start, recorded = self._with_book(body)
        if not recorded:
            self.held_back += 1
        return start, recorded

    def _lead(self) -> float:
        """How far ahead of now a reservation is made: as much of a shared ledger's write time
        as half the tolerance of a late start does not cover (a reservation made "now" and
        written slowly would be late, given back, and late again; a lead longer than needed
        delays every request of a worker sending one after another)."""
        if self._ledger is None:
            return 0.0
        return max(0.0, self._ledger.lead - self.late_tolerance / 2)

    def _with_book(self, body: Callable[[Book | None], _T]) -> _T:
        """``body`` under the lock, on the windows as the ledger has them (if any); again from
        a fresh read when another worker wrote the ledger first (:class:`LedgerConflict`)."""
        for attempt in range(LEDGER_ATTEMPTS):
            try:
                with self._lock, self._shared() as book:
                    return body(book)
            except LedgerConflict:
                self.conflicts += 1
                if attempt + 1 == LEDGER_ATTEMPTS:
                    raise
                # Another worker won the write: let it run before reading again (real time,
                # tiny, and spread so the losers do not meet again).
                time.sleep(random.uniform(0.0, 0.002 * (attempt + 1)))
        raise AssertionError("unreachable")  # pragma: no cover

    def _poll_candidates(self, give_up: float) -> set[float]:
        """Times at which :meth:`_bulk_wants` can change its verdict."""
        multi, ahead = self._multi, self._account.period
        found = {give_up}
        for c in multi.candidates():
            found.update((c, c - ahead))
        if multi.starts:
            # Nudged like the windows' own candidates: ``(s + idle) - s`` can round to just
            # under ``idle``, and the poll would then sleep to its whole deferral instead.
            idle = self.bulk_idle
            found.add(multi.starts[-1] + idle + idle * 1e-9 + 1e-9)
        return found

    def _bulk_wants(self, t: float, give_up: float) -> bool:
        """Whether a push wants the per-second slot of a poll at ``t`` (module docstring):
        a push is on and its per-minute budget lets a bulk request start at ``t`` or within
        one per-second window after it. Never from ``give_up`` on."""
        starts = self._multi.starts
        if t >= give_up or len(starts) < 2 or t - starts[-1] >= self.bulk_idle:
            return False
        if starts[-1] <= self._push_over_at:  # nobody's bulk start since our push's last
            return False
        return self._multi.fits(t) or self._multi.fits(t + self._account.period)

    @contextlib.contextmanager
    def _shared(self) -> Iterator[Book | None]:
        """With a ledger: its book, locked, loaded into the windows and saved from them after.
        Without one: nothing (the windows are this process's own)."""
        if self._ledger is None:
            yield None
            return
        with self._ledger.locked(keep_after=self._clock() - self._longest) as book:
            for w in self._windows:
                w.load(book.starts.get(w.name, []))
            self._dirty = False
            yield book
            if self._dirty:  # a look that reserved nothing writes nothing
                book.starts = {w.name: list(w.starts) for w in self._windows}

    def push_over(self) -> None:
        """The caller has sent its push's last bulk import: polls need not wait
        :attr:`bulk_idle` for more (a poll already held back looks again within a per-second
        window). Holds until the next bulk start (a resubmission, another push, another
        process's import seen through the ledger), which restores the rule."""
        with self._lock:
            self._push_over_at = self._own_last_bulk

    def block_until(self, until: float) -> None:
        """No request of the account starts before ``until`` (on :attr:`clock`): the server
        asked for a wait. Shared through the ledger with every process on the account."""

        def body(book: Book | None) -> None:
            self._blocked_until = max(self._blocked_until, until)
            if book is not None:
                book.blocked_until = max(book.blocked_until, until)

        self._with_book(body)

    def clock(self) -> float:
        """The limiter's clock (the wall clock when shared through a ledger)."""
        return self._clock()

    def acquire(self, kind: RequestKind = RequestKind.OTHER) -> float:
        """Wait until a request of ``kind`` may start; returns the seconds waited. A start
        later than :attr:`late_tolerance` after its slot reserves again, and so does a poll
        whose slot a push now wants (module docstring)."""
        waited = 0.0
        since = self._clock()
        while True:
            start, recorded = self._reserve(kind, since, tentative=True)
            wait = start - self._clock()
            if not recorded:  # held back: look again within a per-second window, in case
                wait = min(wait, self._account.period)  # the push said it is over meanwhile
            if wait > 0:
                self._sleep(wait)
                waited += wait
            if not recorded:
                continue
            if kind is RequestKind.POLL and self._give_way(start, since):
                continue
            # Last, right before the request goes: waiting for the lock above can make it late.
            if self._clock() - start > self.late_tolerance:
                self._release(kind, start)
                continue
            return waited

    def _release(self, kind: RequestKind, start: float) -> None:
        def body(_book: Book | None) -> None:
            for w in self._by_kind[kind]:
                w.release(start)
            self._dirty = True

        self._with_book(body)
        self.rereserved += 1

    def _give_way(self, start: float, since: float) -> bool:
        """Give a poll's slot at ``start`` back if a push reserved around it meanwhile."""

        def body(_book: Book | None) -> bool:
            self._multi.prune(self._clock())
            if not self._bulk_wants(start, since + self.max_poll_deferral):
                return False
            self._account.release(start)
            self._dirty = True
            return True

        gave_way = self._with_book(body)
        if gave_way:
            self.yielded += 1
        return gave_way
