"""The proactive limiter: never more than an account budget in any sliding window."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.activecampaign import RateLimiter, RequestKind
from exporter.activecampaign.limiter import default_allowance

from .fakes import FakeClock

OTHER, MULTI, SINGLE = RequestKind.OTHER, RequestKind.BULK_MULTI, RequestKind.BULK_SINGLE
POLL = RequestKind.POLL


def busiest_window(starts: list[float], period: float) -> int:
    """The most starts in any half-open window (x - period, x]."""
    ordered = sorted(starts)
    return (
        max(
            (bisect.bisect_right(ordered, x) - bisect.bisect_right(ordered, x - period))
            for x in ordered
        )
        if ordered
        else 0
    )


def run(limiter: RateLimiter, clock: FakeClock, kinds: list[RequestKind]) -> list[float]:
    starts = []
    for kind in kinds:
        limiter.acquire(kind)
        starts.append(clock())
    return starts


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep)


def test_five_per_second_for_every_request(limiter: RateLimiter, clock: FakeClock) -> None:
    starts = run(limiter, clock, [OTHER] * 50)
    assert busiest_window(starts, 1.0) == 5
    # Not over-cautious either: 10 windows of 5, each 0.5% + 100 ms longer than a second.
    assert starts[-1] - starts[0] <= 9 * 1.105 + 1e-6


def test_first_requests_go_at_once(limiter: RateLimiter, clock: FakeClock) -> None:
    run(limiter, clock, [OTHER] * 5)
    assert clock.sleeps == []


def test_bulk_multi_hundred_per_minute_and_five_per_second(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    starts = run(limiter, clock, [MULTI] * 250)
    assert busiest_window(starts, 60.0) == 100
    assert busiest_window(starts, 1.0) <= 5
    # Two full minutes, then the last 50 at the per-second pace.
    assert starts[-1] - starts[0] <= 2 * 60.4 + 50 / 5 * 1.105 + 1e-6


def test_bulk_single_twenty_per_minute(limiter: RateLimiter, clock: FakeClock) -> None:
    starts = run(limiter, clock, [SINGLE] * 60)
    assert busiest_window(starts, 60.0) == 20


def test_bulk_budgets_are_separate(limiter: RateLimiter, clock: FakeClock) -> None:
    starts = run(limiter, clock, [MULTI] * 100 + [SINGLE] * 20)
    # The single-contact budget is not spent by multi-contact imports: no minute-long wait.
    assert starts[-1] - starts[0] < 30.0


def test_polls_take_free_slots_in_front_of_a_waiting_bulk_request(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    bulk = [limiter.reserve(MULTI) for _ in range(101)]
    poll = limiter.reserve(OTHER)
    assert bulk[100] - bulk[0] >= 60.0  # the 101st import waits for the minute
    assert poll < bulk[100]  # ...but a poll does not wait behind it
    assert busiest_window([*bulk, poll], 1.0) <= 5


@pytest.mark.parametrize(
    ("share", "per_second", "per_minute"),
    [(1.0, 5, 100), (0.5, 2, 50), (1 / 3, 1, 33), (0.25, 1, 25)],
)
def test_share_is_a_fraction_of_every_budget(
    clock: FakeClock, share: float, per_second: int, per_minute: int
) -> None:
    limiter = RateLimiter(share=share, clock=clock, sleep=clock.sleep)
    starts = run(limiter, clock, [MULTI] * 120)
    assert busiest_window(starts, 1.0) == per_second
    assert busiest_window(starts, 60.0) == per_minute


@pytest.mark.parametrize("workers", [2, 3, 4, 5])
def test_workers_sharing_the_account_stay_within_it_together(
    clock: FakeClock, workers: int
) -> None:
    limiters = [RateLimiter(share=1 / workers, clock=clock) for _ in range(workers)]
    starts: list[float] = []
    for _ in range(60):
        for lim in limiters:  # no coordination between them: only the share
            starts.append(lim.reserve(MULTI))
    assert busiest_window(starts, 1.0) <= 5
    assert busiest_window(starts, 60.0) <= 100


def test_time_scale_multiplies_every_budget(clock: FakeClock) -> None:
    limiter = RateLimiter(time_scale=10.0, clock=clock, sleep=clock.sleep)
    starts = run(limiter, clock, [MULTI] * 250)
    assert busiest_window(starts, 0.1) <= 5
    assert busiest_window(starts, 6.0) <= 100
    assert starts[-1] - starts[0] < 14.0  # ten times faster than an unscaled run


@pytest.mark.parametrize(
    ("scale", "allowance"), [(1.0, 0.1), (2.0, 0.05), (10.0, 0.025), (100.0, 0.025)]
)
def test_default_allowance_is_real_time(scale: float, allowance: float) -> None:
    assert default_allowance(scale) == pytest.approx(allowance)


def test_threads_sharing_a_limiter_never_exceed_it(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    starts: list[float] = []
    lock = threading.Lock()

    def worker(kind: RequestKind) -> None:
        for _ in range(60):
            start = limiter.reserve(kind)
            with lock:
                starts.append(start)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (MULTI, OTHER, OTHER, SINGLE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 240
    assert busiest_window(starts, 1.0) <= 5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([OTHER, MULTI, SINGLE, POLL]), st.floats(0.0, 3.0)),
        min_size=1,
        max_size=150,
    ),
    st.sampled_from([1.0, 0.5, 1 / 3]),
)
def test_no_sliding_window_is_ever_exceeded(
    steps: list[tuple[RequestKind, float]], share: float
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(share=share, clock=clock, slack=0.0, allowance=0.0)
    by_kind: dict[RequestKind, list[float]] = {OTHER: [], MULTI: [], SINGLE: [], POLL: []}
    for kind, pause in steps:
        clock.now += pause  # callers arrive at arbitrary times; reservations may be ahead
        by_kind[kind].append(limiter.reserve(kind))
    every = [t for ts in by_kind.values() for t in ts]
    assert busiest_window(every, 1.0) <= max(int(5 * share + 1e-9), 1)
    assert busiest_window(by_kind[MULTI], 60.0) <= int(100 * share + 1e-9)
    assert busiest_window(by_kind[SINGLE], 60.0) <= max(int(20 * share + 1e-9), 1)


class StallingClock(FakeClock):
    """A clock whose first sleep overshoots by ``stall`` (a process that wakes late: a garbage
    collection, a busy core); ``meanwhile`` runs during that sleep (another thread)."""

    def __init__(self, stall: float, meanwhile: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.stall = stall
        self.meanwhile = meanwhile

    def sleep(self, seconds: float) -> None:
        self.meanwhile()
        self.meanwhile = lambda: None
        super().sleep(seconds + self.stall)
        self.stall = 0.0


def late_sixth_request(stall: float, *, tolerance: float | None = None) -> RateLimiter:
    """Five requests start; a sixth sleeps for its slot while another thread reserves nine
    more behind it, then wakes ``stall`` seconds late. Returns the limiter; asserts that the
    starts as really made stay within ActiveCampaign's own 1-second window."""
    later: list[float] = []
    clock = StallingClock(stall)
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    if tolerance is not None:
        limiter.late_tolerance = tolerance
    starts = []
    for _ in range(5):
        limiter.acquire(OTHER)
        starts.append(clock())
    clock.meanwhile = lambda: later.extend(limiter.reserve(OTHER) for _ in range(9))
    limiter.acquire(OTHER)
    starts.append(clock())
    assert busiest_window([*starts, *later], 1.0) <= 5
    return limiter


def test_a_start_later_than_half_the_allowance_reserves_again() -> None:
    """Waking 200 ms late (more than the 100 ms allowance), the sixth request would land in a
    server window already holding five; it gives its slot back and takes a free one."""
    assert late_sixth_request(0.2).rereserved == 1


def test_without_reserving_again_a_late_start_is_throttled() -> None:
    """The same stall with the re-reservation switched off overfills a window."""
    with pytest.raises(AssertionError):
        late_sixth_request(0.2, tolerance=float("inf"))


def test_a_start_within_the_tolerance_keeps_its_slot() -> None:
    assert late_sixth_request(0.04).rereserved == 0


@pytest.mark.parametrize(
    "kwargs", [{"share": 0}, {"share": 1.5}, {"time_scale": 0}, {"slack": -1}, {"allowance": -1}]
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)  # type: ignore[arg-type]
