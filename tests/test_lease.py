"""The export's lease: of runs racing for it exactly one wins, a repeated take by the holder
is a no-op, a gone holder is taken over, and release frees it only for its holder."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.errors import RunConflict
from exporter.reading.refs import SnapshotFile
from exporter.run import lease
from exporter.run.records import RunRequest
from exporter.storage import runs
from exporter.storage.records import ActiveRun, PendingSnapshot, SnapshotRecord, read_record
from exporter.storage.store import LocalStore

EXPORT = "newsletter"


class Ctx:
    def __init__(self, store: LocalStore, now: datetime | None = None) -> None:
        self.store = store
        self._now = now or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now


def request(n: int, requested_by: str = "cli") -> RunRequest:
    return RunRequest(
        export=EXPORT,
        run_id=f"20261205T000000Z-{n:08x}",
        snapshot=SnapshotRecord(
            kind="csv",
            path=f"snapshots/newsletter/{n}.csv",
            files=(SnapshotFile(f"snapshots/newsletter/{n}.csv", 10, f"etag-{n}"),),
            modified=datetime(2026, 12, 5, tzinfo=UTC),
        ),
        snapshot_identity=f"{n:08x}" * 8,
        requested_by=requested_by,
        requested_at="2026-12-05T00:00:00+00:00",
    )


def test_of_many_racing_for_the_lease_exactly_one_wins(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ctx = Ctx(store)
    barrier = threading.Barrier(8)
    won: list[str] = []
    lost: list[str | None] = []

    def start(n: int) -> None:
        req = request(n)
        barrier.wait()
        try:
            lease.take(ctx, req)
            won.append(req.run_id)
        except RunConflict as exc:
            lost.append(exc.run_id)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7
    assert set(lost) == set(won)  # every loser is told who holds it
    holder = read_record(store, runs.active_run_path(EXPORT), ActiveRun)
    assert holder is not None and holder.run_id == won[0]


def test_the_holder_takes_again_and_only_the_holder_releases(tmp_path: Path) -> None:
    ctx = Ctx(LocalStore(tmp_path))
    first, second = request(1), request(2)
    lease.take(ctx, first)
    lease.take(ctx, first)  # an activity run twice
    lease.release(ctx, second)  # never held it: nothing happens
    with pytest.raises(RunConflict):
        lease.take(ctx, second)
    lease.release(ctx, first)
    lease.take(ctx, second)


def test_a_trigger_losing_the_race_leaves_its_snapshot_pending(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    ctx = Ctx(store)
    lease.take(ctx, request(1))
    with pytest.raises(RunConflict):
        lease.take(ctx, request(2, "blob"))
    with pytest.raises(RunConflict):
        lease.take(ctx, request(3, "timer"))  # latest wins
    pending = read_record(store, runs.pending_path(EXPORT), PendingSnapshot)
    assert pending is not None and pending.path == "snapshots/newsletter/3.csv"
    store.delete(runs.pending_path(EXPORT))
    with pytest.raises(RunConflict):
        lease.take(ctx, request(4, "http"))  # told, not queued
    assert not store.exists(runs.pending_path(EXPORT))


def test_a_holder_silent_past_the_ttl_is_taken_over(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    lease.take(Ctx(store), request(1))
    old = (datetime.now(UTC) - lease.LEASE_TTL - timedelta(minutes=1)).timestamp()
    os.utime(tmp_path / runs.active_run_path(EXPORT), (old, old))
    lease.take(Ctx(store), request(2))
    holder = read_record(store, runs.active_run_path(EXPORT), ActiveRun)
    assert holder is not None and holder.run_id == request(2).run_id
