"""One account's budget shared through a ledger file: limiters in different processes (or
threads) on one file stay within every window together, and a server's wait holds them all."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import pytest

from exporter.activecampaign import ActiveCampaignClient, RetryPolicy
from exporter.activecampaign.ledger import FileLedger
from exporter.activecampaign.limiter import RateLimiter, RequestKind, default_allowance

from .fakes import ScriptedTransport, reply


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(path: Path, clock: Clock) -> RateLimiter:
    return RateLimiter(ledger=FileLedger(path), clock=clock, sleep=clock.sleep, allowance=0.0)


def test_a_second_limiter_sees_the_first_ones_requests(tmp_path: Path) -> None:
    clock = Clock()
    a, b = limiter(tmp_path / "acct.json", clock), limiter(tmp_path / "acct.json", clock)
    starts = [a.reserve() for _ in range(5)]
    assert starts == [clock.now] * 5
    assert b.reserve() >= clock.now + 1.0  # the sixth request of the second waits a second


def test_bulk_budget_is_one_per_account(tmp_path: Path) -> None:
    clock = Clock()
    a, b = limiter(tmp_path / "acct.json", clock), limiter(tmp_path / "acct.json", clock)
    for _ in range(100):
        a.reserve(RequestKind.BULK_MULTI)
    assert b.reserve(RequestKind.BULK_MULTI) >= clock.now + 60.0
    assert b.reserve(RequestKind.OTHER) < clock.now + 60.0  # other requests are not held


def test_a_server_wait_holds_every_limiter_of_the_account(tmp_path: Path) -> None:
    clock = Clock()
    a, b = limiter(tmp_path / "acct.json", clock), limiter(tmp_path / "acct.json", clock)
    a.block_until(clock.now + 7.0)
    assert b.reserve() >= clock.now + 7.0
    other = limiter(tmp_path / "other-account.json", clock)
    assert other.reserve() == clock.now  # another account is not held


def test_a_damaged_ledger_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "acct.json"
    path.write_text("{not json")
    clock = Clock()
    assert limiter(path, clock).reserve() == clock.now
    assert '"account"' in path.read_text()


def test_the_ledger_stays_small(tmp_path: Path) -> None:
    clock = Clock()
    a = limiter(tmp_path / "acct.json", clock)
    for _ in range(2_000):
        a.acquire()
    assert (tmp_path / "acct.json").stat().st_size < 4_000  # only the last windows are kept


def test_a_ledger_file_per_account_hostname(tmp_path: Path) -> None:
    one = FileLedger.for_account(tmp_path, "Acme.API-us1.com")
    assert one.path == tmp_path / "acme.api-us1.com.json"
    assert FileLedger.for_account(tmp_path, "127.0.0.1:8765").path.name == "127.0.0.1_8765.json"


SCALE = 20.0


def _worker(path: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    lim = RateLimiter(ledger=FileLedger(path), time_scale=SCALE)
    starts = []
    for _ in range(n):
        lim.acquire()
        starts.append(time.time())
    out.put(starts)


@pytest.mark.serial
def test_processes_on_one_ledger_stay_within_the_account_budget(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "a.json"), 30, out)) for _ in range(3)
    ]
    for p in procs:
        p.start()
    starts = sorted(t for _ in procs for t in out.get(timeout=60))
    for p in procs:
        p.join(timeout=10)
    window = 1.0 / SCALE
    # Every window of the account's length holds at most 5 starts, across the processes.
    for i, t in enumerate(starts):
        inside = [s for s in starts[i:] if s < t + window * 0.97]
        assert len(inside) <= 5, (i, len(inside))
    # ...and the three together still used the budget (they did not serialise one by one).
    window_with_margins = 1.0 / SCALE * 1.005 + default_allowance(SCALE, shared=True)
    assert starts[-1] - starts[0] < 90 / 5 * window_with_margins * 1.3


def test_a_429s_wait_holds_back_another_process_on_the_account(tmp_path: Path) -> None:
    """The client that was told to wait tells the ledger; a client in another process (here:
    another limiter on the same file) does not send before the wait is over."""
    clock = Clock()
    told = ActiveCampaignClient(
        "https://acme.api-us1.com",
        "k" * 40,
        transport=ScriptedTransport(
            [reply(429, {}, {"Retry-After": "9"}), reply(200, {"user": {}})], clock=clock
        ),
        limiter=limiter(tmp_path / "acct.json", clock),
        retry=RetryPolicy(max_attempts=2, initial_backoff=0.0, deadline=60.0),
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(0),
    )
    started = clock.now
    told.verify()
    other_clock = Clock()
    other = limiter(tmp_path / "acct.json", other_clock)
    assert other.reserve() >= started + 9.0
