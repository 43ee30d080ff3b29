"""Export schedules: 6-field NCRONTAB expressions, evaluated in UTC.

The format is Azure Functions' timer format,
``{second} {minute} {hour} {day} {month} {day-of-week}``, e.g. ``0 30 2 * * *`` (02:30:00 UTC
every day) or ``0 0 */6 * * 1-5`` (every six hours on weekdays). Each field takes ``*``, a
number, a range ``a-b``, a list ``a,b`` and a step ``*/n`` or ``a-b/n``; months and days of the
week also take names (``JAN``, ``MON``). Days of the week run 0 (Sunday) to 6. As in NCRONTAB, a
time matches only when *both* the day of the month and the day of the week match.

Fields are validated here (so an error names the part that is wrong); croniter computes times.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from croniter import croniter

from exporter.errors import ConfigError

FIELD = "schedule"

_NAMES: dict[str, tuple[str, ...]] = {
    "month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    "day-of-week": ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
}
_PARTS: tuple[tuple[str, int, int], ...] = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_ITEM = re.compile(r"(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?")


def _error(message: str, field: str) -> ConfigError:
    return ConfigError(message, field=field)


def _value(token: str, part: str, low: int, high: int, field: str) -> int:
    names = _NAMES.get(part, ())
    if token in names:
        return names.index(token) + low
    if not token.isdigit():
        raise _error(f"{part} {token!r} is not a number" + (" or a name" if names else ""), field)
    number = int(token)
    if not low <= number <= high:
        raise _error(f"{part} {number} is out of range {low}-{high}", field)
    return number


def _check_part(text: str, part: str, low: int, high: int, field: str) -> None:
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if not match:
            raise _error(f"{part} {item!r} is not valid (use *, n, a-b, a,b or */n)", field)
        if match["step"] is not None and int(match["step"]) == 0:
            raise _error(f"{part} step must be at least 1", field)
        if match["range"] == "*":
            continue
        first, _, last = match["range"].partition("-")
        start = _value(first, part, low, high, field)
        if last and _value(last, part, low, high, field) < start:
            raise _error(f"{part} range {item!r} runs backwards", field)


def validate(expr: str, *, field: str = FIELD) -> str:
    """The expression in normal form (single spaces, lower case), or :class:`ConfigError`."""
    parts = expr.strip().lower().split()
    if len(parts) != 6:
        raise _error(
            f"needs 6 fields (second minute hour day month day-of-week), got {len(parts)}; "
            "e.g. '0 0 2 * * *' for 02:00 UTC daily",
            field,
        )
    for text, (part, low, high) in zip(parts, _PARTS, strict=True):
        _check_part(text, part, low, high, field)
    normal = " ".join(parts)
    if not croniter.is_valid(normal, second_at_beginning=True):
        raise _error("is not a valid NCRONTAB expression", field)
    return normal


def _utc(dt: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (as schedules are)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def next_after(expr: str, dt: datetime) -> datetime:
    """The first scheduled time strictly after ``dt`` (UTC, timezone-aware)."""
    it = croniter(validate(expr), _utc(dt), second_at_beginning=True, day_or=False)
    result: datetime = it.get_next(datetime)
    return _utc(result)


def is_due(expr: str, last_run: datetime | None, now: datetime) -> bool:
    """Whether a scheduled time lies in ``(last_run, now]``.

    ``last_run`` ``None`` means there is no reference point, so nothing is due: for an export
    that has never run, pass when it was saved (``created_at``/``updated_at``); saving an export
    never runs it, its first scheduled time after saving does.
    """
    if last_run is None:
        return False
    return next_after(expr, last_run) <= _utc(now)


DEFAULT_TICK = timedelta(minutes=5)
"""How often the app's timer looks for due exports by default (``0 */5 * * * *``): the finest
schedule an export may have."""
_SAMPLE = 240
"""Occurrences looked at to find a schedule's shortest gap (a day of a 6-minute schedule)."""
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def shortest_interval(expr: str) -> timedelta:
    """The shortest time between two occurrences of ``expr`` (over its next occurrences from a
    fixed date, so the answer does not depend on today)."""
    it = croniter(validate(expr), _EPOCH, second_at_beginning=True, day_or=False)
    times = [_utc(it.get_next(datetime)) for _ in range(_SAMPLE)]
    return min(b - a for a, b in pairwise(times))


def check_not_finer_than(expr: str, tick: timedelta, *, field: str = FIELD) -> str:
    """``expr``, or a :class:`ConfigError` when it runs more often than the timer ticks (it
    would silently run less often than it says)."""
    gap = shortest_interval(expr)
    if gap < tick:
        raise _error(
            f"runs every {_span(gap)} at times, more often than the app looks for due exports "
            f"(every {_span(tick)}); choose a schedule at least {_span(tick)} apart",
            field,
        )
    return expr


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def latest_slot(
    expr: str, after: datetime, now: datetime, *, limit: int = 100_000
) -> datetime | None:
    """The latest scheduled time in ``(after, now]``, or ``None``: the slot a timer tick acts
    on. Slots missed while the app was stopped collapse into this one (one run, not many)."""
    it = croniter(validate(expr), _utc(after), second_at_beginning=True, day_or=False)
    found: datetime | None = None
    for _ in range(limit):
        t = _utc(it.get_next(datetime))
        if t > _utc(now):
            return found
        found = t
    return found
