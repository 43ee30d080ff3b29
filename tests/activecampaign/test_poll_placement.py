"""Status polls and a bulk push on one limiter: polls go in the gaps the per-minute bulk budget
leaves, never in front of a burst, and are not held back when no push wants the slot.

The push and the confirm run as they do in a run (one thread sending bulk imports one after
another as fast as the limiter lets it, one polling each import a second after it was sent),
simulated on a fake clock: the pusher's steps run whenever the poller sleeps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.activecampaign import RateLimiter, RequestKind

from .fakes import FakeClock
from .test_limiter import busiest_window

OTHER, POLL, MULTI = RequestKind.OTHER, RequestKind.POLL, RequestKind.BULK_MULTI


class PushingClock(FakeClock):
    """A fake clock on which a pusher sends ``bulk`` imports back to back: each is reserved
    as soon as the one before it started. Time only moves when the poller sleeps; the
    pusher's starts up to the wake-up time happen during that sleep."""

    def __init__(self, bulk: int) -> None:
        super().__init__()
        self.limiter = RateLimiter(clock=self, sleep=self.sleep)
        self.left = bulk
        self.starts: list[float] = []
        self.next: float | None = None

    def begin(self) -> None:
        self._reserve_next()

    def _reserve_next(self) -> None:
        self.next = None
        if self.left:
            self.left -= 1
            self.next = self.limiter.reserve(MULTI)

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.advance(self.now + seconds)

    def advance(self, until: float) -> None:
        while self.next is not None and self.next <= until:
            self.now = max(self.now, self.next)
            self.starts.append(self.next)
            self._reserve_next()
        self.now = max(self.now, until)

    def finish(self) -> None:
        self.advance(math.inf if self.next is None else self.next)
        while self.next is not None:
            self.advance(self.next)


@dataclass
class Run:
    bulk: list[float]
    polls: list[float]
    wanted: list[float] = field(default_factory=list)
    limiter: RateLimiter | None = None


def push_and_confirm(bulk: int, kind: RequestKind = POLL, after: float = 1.0) -> Run:
    """``bulk`` imports pushed back to back; each polled once, ``after`` seconds after it
    started, by one poller (polls in order, each waiting for the one before)."""
    clock = PushingClock(bulk)
    clock.begin()
    polls: list[float] = []
    wanted: list[float] = []
    for k in range(bulk):
        while len(clock.starts) <= k:  # the poller waits for import k to be sent
            assert clock.next is not None
            clock.sleep(clock.next - clock.now)
        due = clock.starts[k] + after
        if due > clock.now:
            clock.sleep(due - clock.now)
        wanted.append(clock.now)
        clock.limiter.acquire(kind)
        polls.append(clock.now)
    clock.finish()
    return Run(clock.starts, polls, wanted, clock.limiter)


def pushed_alone(bulk: int) -> list[float]:
    clock = PushingClock(bulk)
    clock.begin()
    clock.finish()
    return clock.starts


def test_polls_do_not_slow_a_push_down() -> None:
    """400 imports (four minutes of the bulk budget), each polled: the push keeps the pace it
    has with no polls at all (within one per-second window over four minutes), and every
    poll went in a gap the bulk budget left."""
    alone = pushed_alone(400)
    run = push_and_confirm(400)
    assert len(run.bulk) == len(run.polls) == 400
    assert run.bulk[-1] - run.bulk[0] <= alone[-1] - alone[0] + 1.105
    assert busiest_window([*run.bulk, *run.polls], 1.0) <= 5
    assert busiest_window(run.bulk, 60.0) <= 100


def test_polls_as_ordinary_requests_would_slow_the_push_down() -> None:
    """The same push with the polls placed like any request (the first free slot): each
    minute's burst loses slots to them, and the push ends seconds later. (What the placement
    above is for.)"""
    alone = pushed_alone(400)
    run = push_and_confirm(400, kind=OTHER)
    assert run.bulk[-1] - run.bulk[0] > alone[-1] - alone[0] + 5.0


def test_polls_wait_for_the_gap_after_a_burst() -> None:
    """A poll asked for during the first burst goes where the minute's bulk budget is spent
    (after the hundredth import), not in between."""
    run = push_and_confirm(150)
    hundredth = run.bulk[99]
    assert all(p >= hundredth for p in run.polls[:90])
    # ... and in that gap, they go at the per-second pace: all 100 within ~22 s of it
    assert run.polls[99] - hundredth <= 20 * 1.105 + 2 * 1.105


def test_polls_go_freely_when_bulk_is_idle() -> None:
    """Two seconds after the push's last import, polls go at once."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(10):
        clock.now = limiter.reserve(MULTI)
    clock.now += limiter.bulk_idle
    assert [limiter.reserve(POLL) for _ in range(5)] == [clock.now] * 5


def test_a_lone_send_does_not_hold_its_poll_back() -> None:
    """One bulk import (a small export): its poll a moment later goes at once."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    limiter.acquire(MULTI)
    clock.now += 0.01
    assert limiter.reserve(POLL) == clock.now


def test_during_a_push_a_poll_waits_but_an_ordinary_request_does_not() -> None:
    """Mid-burst (the pusher has just started its tenth import), a poll is placed after the
    push would be idle; a request of another kind takes the next free slot as before."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(10):
        clock.now = limiter.reserve(MULTI)
    last = clock.now
    assert limiter.reserve(POLL) >= last + limiter.bulk_idle
    assert limiter.reserve(OTHER) < last + limiter.bulk_idle


def test_a_poll_is_held_back_at_most_half_a_bulk_window() -> None:
    """A push slower than its budget (a busy client) never fills the minute: its polls are
    held back, but never longer than ``max_poll_deferral``, so confirmations keep coming."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    asked = clock.now
    for _ in range(80):  # one import every 0.5 s, for 40 s: the push is on all that time
        limiter.reserve(MULTI)
        clock.now += 0.5
    clock.now = asked
    poll = limiter.reserve(POLL)
    assert poll <= asked + limiter.max_poll_deferral + 1.105
    assert poll >= asked + limiter.max_poll_deferral - 1e-9
    assert limiter.max_poll_deferral == pytest.approx(60.4 / 2)


class PushStartsWhileSleeping(FakeClock):
    """A clock whose first sleep lets another thread reserve ten bulk imports (a push starts
    while a poll waits for its slot)."""

    def __init__(self) -> None:
        super().__init__()
        self.limiter = RateLimiter(clock=self, sleep=self.sleep)
        self.bulk: list[float] = []

    def sleep(self, seconds: float) -> None:
        if not self.bulk:
            self.bulk = [self.limiter.reserve(MULTI) for _ in range(10)]
        super().sleep(seconds)


def test_a_poll_gives_way_to_a_push_started_while_it_waited() -> None:
    clock = PushStartsWhileSleeping()
    limiter = clock.limiter
    for _ in range(5):
        limiter.acquire(OTHER)  # the per-second budget is full: the poll must wait
    limiter.acquire(POLL)
    assert limiter.yielded == 1
    assert clock.now >= max(clock.bulk) + limiter.bulk_idle
    assert busiest_window([*clock.bulk, clock.now], 1.0) <= 5


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 260), st.floats(0.0, 5.0))
def test_pushes_of_any_size_keep_their_pace_and_every_budget(bulk: int, after: float) -> None:
    """Whatever the push's size and however soon polls are due, no window is exceeded, the
    push is at most one per-second window slower than alone, and every poll is made within
    the longest deferral (plus the per-second pace of the polls queued before it)."""
    alone = pushed_alone(bulk)
    run = push_and_confirm(bulk, after=after)
    assert busiest_window([*run.bulk, *run.polls], 1.0) <= 5
    assert busiest_window(run.bulk, 60.0) <= 100
    assert run.bulk[-1] - run.bulk[0] <= alone[-1] - alone[0] + 1.105 + 1e-6
    assert run.limiter is not None
    slowest = max(p - w for p, w in zip(run.polls, run.wanted, strict=True))
    assert slowest <= run.limiter.max_poll_deferral + 2 * 1.105


class SlowLockLimiter(RateLimiter):
    """A limiter whose first poll check waits ``stall`` seconds for the ledger's lock (other
    processes hold it) while another thread reserves nine requests."""

    def __init__(self, clock: FakeClock, stall: float) -> None:
        super().__init__(clock=clock, sleep=clock.sleep)
        self.fake = clock
        self.stall = stall
        self.later: list[float] = []

    def _give_way(self, start: float, since: float) -> bool:
        if self.stall:
            self.later.extend(self.reserve(OTHER) for _ in range(9))
            self.fake.now += self.stall
            self.stall = 0.0
        return super()._give_way(start, since)


def test_a_poll_delayed_by_its_check_reserves_again_rather_than_start_late() -> None:
    """The check whether a push wants the slot takes the (ledger's) lock; a poll that waited
    for it longer than the tolerance is late, and reserves again like any late start."""
    clock = FakeClock()
    limiter = SlowLockLimiter(clock, stall=0.2)
    starts = []
    for _ in range(5):
        limiter.acquire(OTHER)
        starts.append(clock())
    limiter.acquire(POLL)
    starts.append(clock())
    assert limiter.rereserved == 1
    assert busiest_window([*starts, *limiter.later], 1.0) <= 5


@settings(max_examples=200, deadline=None)
@given(start=st.floats(min_value=0.0, max_value=2e6, allow_nan=False, allow_infinity=False))
def test_a_held_poll_goes_when_the_push_ends_not_when_its_deferral_runs_out(start: float) -> None:
    """A refresh-sized push (20 imports, the minute's budget never full) holds its polls
    back; the first goes as soon as bulk has been idle for ``bulk_idle``, whatever the clock
    reads. (``(s + idle) - s`` rounds below ``idle`` for some ``s``: the poll then slept to the
    end of its 30 s deferral, and a 2% daily refresh took 59 s instead of 38.)"""
    clock = PushingClock(20)
    clock.now = start
    clock.begin()
    clock.advance(start + 1.5)  # the poller asks mid-push
    clock.limiter.acquire(POLL)
    last = clock.starts[-1]
    assert len(clock.starts) == 20  # the push ran on while the poll was held
    assert clock.now <= last + clock.limiter.bulk_idle + clock.limiter._account.period
    assert clock.now - (start + 1.5) < clock.limiter.max_poll_deferral
