"""An account's budget shared by Azure workers through one store object (``StoreLedger``):
optimistic concurrency (ETag) instead of a lock, so limiters in threads, processes or on other
instances stay within every window together; a lost write reserves again; a dead worker's
reservations expire with their window; a slow store never makes every reservation late."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from exporter.activecampaign import RateLimiter, RequestKind
from exporter.activecampaign.ledger import Book, LedgerConflict, dump_book, parse_book
from exporter.storage.budget_ledger import StoreLedger, ledger_path
from exporter.storage.store import LocalStore, Store
from tests.activecampaign.fakes import FakeClock

HOST = "acme.api-us1.com"
START = 1_000_000.0


def exact(store: Store, clock: FakeClock | None = None) -> RateLimiter:
    """A limiter on the account's store ledger with windows of exactly 1 s and 60 s."""
    if clock is None:
        return RateLimiter(ledger=StoreLedger(store, HOST), slack=0.0, allowance=0.0)
    return RateLimiter(
        ledger=StoreLedger(store, HOST), slack=0.0, allowance=0.0, clock=clock, sleep=clock.sleep
    )


def assert_within_budgets(starts: list[tuple[str, float]]) -> None:
    """No window of 1 s holds more than 5 starts, none of 60 s more than 100 bulk starts."""
    for kind, period, limit in (("any", 1.0, 5), ("bulk", 60.0, 100)):
        times = sorted(t for k, t in starts if kind == "any" or k == kind)
        for i, t in enumerate(times):
            inside = [s for s in times[i:] if s < t + period * (1 - 1e-9)]
            assert len(inside) <= limit, (kind, t, len(inside))


def reserve_many(store: Store, n: int) -> list[tuple[str, float]]:
    """``n`` reservations (every third a bulk import) by one worker of its own."""
    lim = exact(store)
    out = []
    for i in range(n):
        kind = RequestKind.BULK_MULTI if i % 3 == 0 else RequestKind.OTHER
        out.append(("bulk" if kind.bulk else "other", lim.reserve(kind)))
    return out


def check_threads_share_one_budget(store: Store, workers: int = 4, n: int = 30) -> None:
    """Workers in threads, each with its own limiter and ledger object on one store: every
    reservation is kept, and together they stay within every window."""
    results: list[list[tuple[str, float]]] = [[] for _ in range(workers)]
    barrier = threading.Barrier(workers)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = reserve_many(store, n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    starts = [s for r in results for s in r]
    assert len(starts) == workers * n
    assert_within_budgets(starts)
    # They shared the budget rather than each taking its own: 120 requests at 5 a second
    # span at least 23 s of reservations.
    times = sorted(t for _, t in starts)
    assert times[-1] - times[0] >= (workers * n) / 5 - 1.0 - 1e-6


class Rival:
    """A store whose next write of the ledger is preceded by another worker's: five requests
    reserved at ``at``, so the first writer's ETag is stale."""

    def __init__(self, inner: Store, at: float) -> None:
        self.inner, self.at, self.armed = inner, at, True

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write_bytes(self, path: str, data: bytes | bytearray, **kw: object) -> str:
        if self.armed and path == ledger_path(HOST):
            self.armed = False
            book = Book(starts={"account": [self.at] * 5})
            self.inner.write_bytes(path, dump_book(book, 0.0))
        return self.inner.write_bytes(path, data, **kw)  # type: ignore[arg-type]


def check_a_lost_write_reserves_again(store: Store) -> None:
    """The first write loses to a rival's five requests; the retry reads them and reserves
    the next second, and the ledger keeps both workers' reservations."""
    clock = FakeClock(START)
    lim = exact(Rival(store, START), clock)  # type: ignore[arg-type]
    assert lim.reserve() == pytest.approx(START + 1.0, abs=1e-6)
    assert lim.conflicts == 1
    book = parse_book(store.read_bytes(ledger_path(HOST)))
    assert book.starts["account"][:5] == [START] * 5
    assert book.starts["account"][5:] == [pytest.approx(START + 1.0, abs=1e-6)]


def check_a_wait_told_to_one_worker_holds_back_another(store: Store) -> None:
    """Two workers of different runs (their own limiters and ledger objects, one store): the
    first is told to wait 30 s, then 10 s (a shorter wait never replaces a longer one); the
    second's next request starts no earlier than the 30 s."""
    clock = FakeClock(START)
    told, other = exact(store, clock), exact(store, clock)
    told.acquire(RequestKind.BULK_MULTI)
    resumed_at = clock() + 30.0
    told.block_until(resumed_at)
    told.block_until(clock() + 10.0)
    other.acquire(RequestKind.OTHER)
    assert clock() >= resumed_at


def test_a_wait_told_to_one_worker_holds_back_another(tmp_path: Path) -> None:
    check_a_wait_told_to_one_worker_holds_back_another(LocalStore(tmp_path))


def test_a_damaged_ledger_object_is_no_wait(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(ledger_path(HOST), b"{not json")
    assert exact(store, FakeClock(START)).reserve() == pytest.approx(START, abs=0.5)


def test_threads_on_one_local_store_share_one_budget(tmp_path: Path) -> None:
    check_threads_share_one_budget(LocalStore(tmp_path))


def _process(root: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(reserve_many(LocalStore(root), n))


def test_processes_on_one_store_share_one_budget(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_process, args=(str(tmp_path), 25, out)) for _ in range(3)]
    for p in procs:
        p.start()
    starts = [s for _ in procs for s in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=10)
    assert len(starts) == 75
    assert_within_budgets(starts)


def test_a_write_that_lost_to_another_worker_reads_again_and_reserves_after_it(
    tmp_path: Path,
) -> None:
    check_a_lost_write_reserves_again(LocalStore(tmp_path))


def test_the_ledger_raises_a_conflict_and_writes_nothing_on_a_stale_etag(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    one, two = StoreLedger(store, HOST), StoreLedger(store, HOST)
    with pytest.raises(LedgerConflict), one.locked(0.0) as mine:
        with two.locked(0.0) as theirs:
            theirs.starts = {"account": [1.0]}
        mine.starts = {"account": [2.0]}
    assert one.peek().starts == {"account": [1.0]} and one.conflicts == 1


def test_a_look_that_reserves_nothing_writes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ledger = StoreLedger(store, HOST)
    with ledger.locked(0.0):
        pass
    assert ledger.writes == 0 and not store.exists(ledger_path(HOST))
    lim = RateLimiter(ledger=ledger, clock=FakeClock(START), allowance=0.0)
    lim.reserve()
    assert ledger.writes == 1
    lim.block_until(START + 5.0)
    assert ledger.writes == 2 and ledger.peek().blocked_until == START + 5.0


def test_a_dead_workers_reservations_expire_with_their_window(tmp_path: Path) -> None:
    """A worker reserves the minute's whole bulk budget ahead and dies (its host recycled):
    the next worker waits for those reservations to leave their window, and no longer."""
    store = LocalStore(tmp_path)
    clock = FakeClock(START)
    dead = exact(store, clock)
    reserved = [dead.reserve(RequestKind.BULK_MULTI) for _ in range(100)]
    assert reserved[-1] >= START + 19.0  # 100 at 5 a second
    del dead
    heir = exact(store, clock)
    assert heir.reserve(RequestKind.BULK_MULTI) == pytest.approx(START + 60.0, abs=1e-6)
    clock.now = START + 200.0  # long after: the dead worker's starts are all gone
    # At once (only the ledger's write time ahead: its lead).
    assert heir.reserve(RequestKind.BULK_MULTI) == pytest.approx(START + 200.0, abs=0.5)
    book = parse_book(store.read_bytes(ledger_path(HOST)))
    assert len(book.starts["bulk_multi"]) <= 2  # pruned: the object stays small


class Slow:
    """A store whose writes take ``seconds`` (a busy blob service)."""

    def __init__(self, inner: Store, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def write_bytes(self, path: str, data: bytes | bytearray, **kw: object) -> str:
        time.sleep(self.seconds)
        return self.inner.write_bytes(path, data, **kw)  # type: ignore[arg-type]


def test_a_slow_store_puts_reservations_ahead_instead_of_making_each_late(
    tmp_path: Path,
) -> None:
    """A write slower than the limiter's tolerance of a late start would make every
    reservation made "now" late (given back, reserved again, late again...). The ledger
    measures its writes and the limiter reserves that far ahead: at most the first is late."""
    ledger = StoreLedger(Slow(LocalStore(tmp_path), 0.08), HOST)  # type: ignore[arg-type]
    lim = RateLimiter(ledger=ledger, time_scale=5.0)
    assert lim.late_tolerance < 0.08

    def acquire_four() -> None:
        for _ in range(4):
            lim.acquire()

    worker = threading.Thread(target=acquire_four, daemon=True)  # livelocked without the lead
    worker.start()
    worker.join(timeout=10.0)
    assert not worker.is_alive(), f"still re-reserving late starts ({lim.rereserved} so far)"
    assert lim.rereserved <= 1
    assert ledger.lead >= 0.08


def test_the_ledger_is_one_object_per_account_hostname() -> None:
    assert ledger_path("Acme.API-us1.com") == "state/_accounts/acme.api-us1.com.ledger.json"
    assert ledger_path("127.0.0.1:8765") == "state/_accounts/127.0.0.1_8765.ledger.json"


def test_an_azure_workers_clients_share_the_accounts_budget_through_the_store(
    tmp_path: Path,
) -> None:
    """Two activities' clients (each with the bulk share the orchestration hands out), built
    by a context with the store's ledgers as :func:`blueprints.runtime.build_runtime` builds
    it, draw on one account budget in the store: once one has taken the account's five
    requests of a second, the other's next waits. A client of a context without a ledger
    keeps its budget to itself."""
    from exporter.management.config import Connection
    from exporter.management.secrets import LocalSecretProvider
    from exporter.run.context import RunContext
    from exporter.settings import HostPolicy
    from exporter.storage.budget_ledger import store_ledgers
    from tests.test_config import connection

    store = LocalStore(tmp_path)
    secrets = LocalSecretProvider({})
    ctx = RunContext(store, secrets, host_policy=HostPolicy(), ledger_for=store_ledgers(store))
    conn = Connection.model_validate(connection(hostname=HOST))
    one = ctx.default_client(conn, "k" * 40, 0.32).limiter
    two = ctx.default_client(conn, "k" * 40, 0.02).limiter
    first = [one.reserve() for _ in range(5)]
    assert two.reserve() >= first[0] + 1.0
    assert store.exists(ledger_path(HOST))
    apart = RunContext(store, secrets, host_policy=HostPolicy())
    alone = apart.default_client(conn, "k" * 40).limiter
    own = [alone.reserve() for _ in range(5)]
    assert own[-1] - own[0] < 0.5  # five at once: the others' requests are not counted
