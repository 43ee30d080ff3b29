"""A pusher that says its push is over (:meth:`RateLimiter.push_over`): the status polls held
back for the push go at once instead of after ``bulk_idle``, and any later bulk start, this
process's or another's through the shared ledger, restores the hold (issue #18 item 5)."""

from __future__ import annotations

from pathlib import Path

from exporter.activecampaign import RateLimiter, RequestKind
from exporter.activecampaign.ledger import FileLedger

from .fakes import FakeClock

POLL, MULTI = RequestKind.POLL, RequestKind.BULK_MULTI


def _pushed(limiter: RateLimiter, clock: FakeClock, n: int = 10) -> float:
    """``n`` bulk imports back to back; the clock at the last one's start."""
    for _ in range(n):
        clock.now = limiter.reserve(MULTI)
    return clock.now


def test_polls_go_at_once_when_the_push_is_over() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    last = _pushed(limiter, clock)
    held = limiter.reserve(POLL, since=clock.now)
    assert held >= last + limiter.bulk_idle  # without the word: held for the push
    fresh = RateLimiter(clock=clock, sleep=clock.sleep)
    clock.now = 2000.0
    last = _pushed(fresh, clock)
    fresh.push_over()
    polls = [fresh.reserve(POLL) for _ in range(10)]
    # The first free per-second slots after the burst: the window the last imports filled
    # ends one per-second period after it began, long before bulk_idle.
    assert polls[0] <= last + fresh.bulk_idle / 2 + 1e-6
    assert all(p < last + fresh.bulk_idle + 1.2 for p in polls)
    assert fresh.held_back == 0


def test_acquire_after_push_over_does_not_wait_for_bulk_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    last = _pushed(limiter, clock)
    limiter.push_over()
    limiter.acquire(POLL)
    assert clock.now <= last + limiter.bulk_idle / 2 + 1e-6
    assert limiter.held_back == 0


def test_a_bulk_start_after_push_over_holds_polls_again() -> None:
    """A resubmission or the next push: the rule is back (two imports in the minute, the last
    one just now)."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    _pushed(limiter, clock)
    limiter.push_over()
    clock.now += 0.5
    again = _pushed(limiter, clock, 1)
    assert limiter.reserve(POLL) >= again + limiter.bulk_idle


def test_another_process_pushing_after_ours_still_holds_our_polls(tmp_path: Path) -> None:
    """Through the account's ledger: our push is over, but another export's imports reserved
    after our last one still want the slots, so our polls wait for that push as before."""
    clock = FakeClock()
    path = tmp_path / "ledger.json"
    ours = RateLimiter(ledger=FileLedger(path), clock=clock, sleep=clock.sleep, allowance=0.0)
    theirs = RateLimiter(ledger=FileLedger(path), clock=clock, sleep=clock.sleep, allowance=0.0)
    _pushed(ours, clock, 5)
    ours.push_over()
    last = _pushed(theirs, clock, 10)
    assert ours.reserve(POLL) >= last + ours.bulk_idle


class PushEndsWhileSleeping(FakeClock):
    """A clock whose first sleep is when the pusher says its push is over (the confirmer's
    poll was already held back for it, asleep)."""

    def __init__(self) -> None:
        super().__init__()
        self.limiter = RateLimiter(clock=self, sleep=self.sleep)

    def sleep(self, seconds: float) -> None:
        if not self.sleeps:
            self.limiter.push_over()
        super().sleep(seconds)


def test_a_poll_held_back_before_the_push_ended_goes_within_a_window_of_its_end() -> None:
    clock = PushEndsWhileSleeping()
    limiter = clock.limiter
    last = _pushed(limiter, clock)
    limiter.acquire(POLL)  # held back at first (the push is on), then told it is over
    assert limiter.held_back >= 1
    assert clock.now <= last + limiter.bulk_idle / 2 + 1e-6
    assert max(clock.sleeps) <= limiter.bulk_idle / 2 + 1e-6
