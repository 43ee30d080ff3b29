"""The timer, tick by tick: an export runs at each of its own scheduled times, at most one tick
late and once per time, whatever the app timer's own rhythm; saving never runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from exporter.storage import runs
from tests.integration.support import EXPORT, World, contact_row, make_world

TICK = timedelta(minutes=5)
HEADER = "Email,FirstName,LastName,Phone,City,Birthday,Tier"


def hourly_world(tmp_path: Path, saved: datetime) -> World:
    """An export scheduled every full hour, saved at ``saved``."""
    return make_world(
        tmp_path,
        schedule="0 0 * * * *",
        segment="snapshots/newsletter/",
        created_at=saved.isoformat(),
        updated_at=saved.isoformat(),
    )


def one_row_snapshot(i: int) -> bytes:
    return f"{HEADER}\n{','.join(contact_row(i))}\n".encode()


def test_an_hourly_export_runs_hourly_across_five_minute_ticks(tmp_path: Path) -> None:
    saved = datetime(2026, 3, 1, 0, 2, tzinfo=UTC)
    world = hourly_world(tmp_path, saved)
    started: list[datetime] = []
    now = saved
    for tick in range(3 * 12 + 1):  # three hours of ticks, 5 minutes apart (and 2 past)
        now = saved + tick * TICK
        # A new snapshot at every tick: only the schedule decides when a run starts.
        world.store.write_bytes(f"snapshots/newsletter/{tick:03d}.csv", one_row_snapshot(tick))
        for req in world.engine.due_runs(now):
            assert req.export == EXPORT and req.requested_by == "timer"
            started.append(now)
    hours = [saved.replace(minute=0) + timedelta(hours=h) for h in (1, 2, 3)]
    assert len(started) == 3
    for run_at, hour in zip(started, hours, strict=True):
        assert hour <= run_at < hour + TICK  # at most one tick late
    slot = world.store.read_bytes(runs.schedule_path(EXPORT))
    assert hours[-1].isoformat().encode() in slot


def test_a_tick_after_a_long_stop_runs_once_not_once_per_missed_time(tmp_path: Path) -> None:
    saved = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    world = hourly_world(tmp_path, saved)
    world.store.write_bytes("snapshots/newsletter/a.csv", one_row_snapshot(1))
    later = saved + timedelta(hours=10, minutes=1)
    assert len(world.engine.due_runs(later)) == 1
    assert world.engine.due_runs(later + TICK) == []
