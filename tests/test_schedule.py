"""6-field NCRONTAB schedules (UTC): validation naming the bad part, next time, due-ness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from exporter.errors import ConfigError
from exporter.management.schedule import (
    check_not_finer_than,
    is_due,
    latest_slot,
    next_after,
    shortest_interval,
    validate,
)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expr", "normal"),
    [
        ("0 0 2 * * *", "0 0 2 * * *"),
        ("  0  30 2 * * * ", "0 30 2 * * *"),
        ("*/15 * * * * *", "*/15 * * * * *"),
        ("0 0 */6 * * 1-5", "0 0 */6 * * 1-5"),
        ("0 0 9 1,15 JAN-JUN MON", "0 0 9 1,15 jan-jun mon"),
    ],
)
def test_valid_expressions_normalise(expr: str, normal: str) -> None:
    assert validate(expr) == normal


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 0 2 * *", "needs 6 fields"),
        ("0 0 2 * * * 2030", "needs 6 fields"),
        ("60 0 2 * * *", "second 60 is out of range"),
        ("0 60 2 * * *", "minute 60"),
        ("0 0 24 * * *", "hour 24"),
        ("0 0 2 0 * *", "day 0"),
        ("0 0 2 * 13 *", "month 13"),
        ("0 0 2 * * 7", "day-of-week 7"),
        ("0 0 2 * * funday", "day-of-week 'funday'"),
        ("0 */0 * * * *", "step"),
        ("0 0 5-2 * * *", "backwards"),
        ("0 0 2 * * mon%", "not valid"),
    ],
)
def test_invalid_expressions_name_the_part(expr: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(expr)
    assert info.value.field == "schedule"
    assert words in info.value.detail


def test_custom_field_name_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        validate("bad", field="exports.0.schedule")
    assert info.value.field == "exports.0.schedule"


def test_next_after_is_strictly_later_and_utc() -> None:
    assert next_after("0 0 2 * * *", at(2024, 1, 1, 1, 0, 0)) == at(2024, 1, 1, 2, 0, 0)
    assert next_after("0 0 2 * * *", at(2024, 1, 1, 2, 0, 0)) == at(2024, 1, 2, 2, 0, 0)
    assert next_after("*/15 * * * * *", at(2024, 1, 1, 3, 0, 7)) == at(2024, 1, 1, 3, 0, 15)
    # Another timezone: 03:00+02:00 is 01:00 UTC, so 02:00 UTC the same day is next.
    cest = datetime(2024, 6, 1, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    assert next_after("0 0 2 * * *", cest) == at(2024, 6, 1, 2, 0, 0)
    # Naive datetimes are UTC.
    assert next_after("0 0 2 * * *", datetime(2024, 1, 1, 1)) == at(2024, 1, 1, 2, 0, 0)


def test_day_and_weekday_must_both_match_as_in_ncrontab() -> None:
    # Friday the 13th, not "every 13th and every Friday".
    assert next_after("0 0 0 13 * 5", at(2024, 1, 1)) == at(2024, 9, 13)
    assert next_after("0 0 0 * * mon", at(2024, 1, 1)) == at(2024, 1, 8)  # 1 Jan 2024: Monday


def test_is_due_when_a_scheduled_time_falls_in_the_half_open_window() -> None:
    daily = "0 0 2 * * *"
    assert is_due(daily, at(2024, 1, 1, 2, 0, 0), at(2024, 1, 2, 2, 0, 0))  # exactly now: due
    assert not is_due(daily, at(2024, 1, 1, 2, 0, 0), at(2024, 1, 2, 1, 59, 59))
    assert not is_due(daily, at(2024, 1, 2, 2, 0, 0), at(2024, 1, 2, 2, 0, 0))  # last_run excluded
    assert is_due(daily, at(2023, 12, 1), at(2024, 1, 2))  # missed many: still just due


def test_never_run_is_not_due_without_a_reference_point() -> None:
    assert not is_due("* * * * * *", None, at(2024, 1, 1))


# --- schedules to the tick ----------------------------------------------------------------------


def test_the_shortest_interval_of_a_schedule() -> None:
    assert shortest_interval("0 */5 * * * *") == timedelta(minutes=5)
    assert shortest_interval("0 0 * * * *") == timedelta(hours=1)
    assert shortest_interval("0 0,1 * * * *") == timedelta(minutes=1)  # uneven: its finest gap


def test_a_schedule_finer_than_the_tick_is_refused_with_the_field_named() -> None:
    with pytest.raises(ConfigError, match="more often than the app looks") as caught:
        check_not_finer_than("0 * * * * *", timedelta(minutes=5))
    assert caught.value.field == "schedule"
    assert check_not_finer_than("0 */5 * * * *", timedelta(minutes=5)) == "0 */5 * * * *"


def test_missed_slots_collapse_into_the_latest() -> None:
    after = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert latest_slot("0 0 * * * *", after, after + timedelta(minutes=59)) is None
    now = after + timedelta(hours=5, minutes=3)
    assert latest_slot("0 0 * * * *", after, now) == after + timedelta(hours=5)
